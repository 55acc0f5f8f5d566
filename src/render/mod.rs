//! PURE: generated mail from templates. No I/O once templates are loaded.
