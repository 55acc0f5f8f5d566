//! Customer identification (SPEC §3.6, Directo's order): the sender's
//! address in the directory; else the sender's domain in the directory,
//! never for public mail providers; else the customer of the last ticket
//! from the same address.

use super::thread::is_public_provider;
use crate::config::{domain_of, Config};
use crate::store::{Result, View};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Identified {
    pub customer: String,
    pub how: &'static str,
}

pub fn identify(address: &str, cfg: &Config, view: &dyn View) -> Result<Option<Identified>> {
    if address.is_empty() {
        return Ok(None);
    }
    let addr = address.to_ascii_lowercase();
    if let Some(c) = cfg
        .customers
        .iter()
        .find(|c| c.addresses.iter().any(|a| a.eq_ignore_ascii_case(&addr)))
    {
        return Ok(Some(Identified {
            customer: c.id.clone(),
            how: "address in the directory",
        }));
    }
    let dom = domain_of(&addr);
    if !dom.is_empty() && !is_public_provider(dom, cfg) {
        if let Some(c) = cfg
            .customers
            .iter()
            .find(|c| c.domains.iter().any(|d| d.eq_ignore_ascii_case(dom)))
        {
            return Ok(Some(Identified {
                customer: c.id.clone(),
                how: "domain in the directory",
            }));
        }
    }
    Ok(view.learned_customer(&addr)?.map(|customer| Identified {
        customer,
        how: "customer of the last ticket from this address",
    }))
}
