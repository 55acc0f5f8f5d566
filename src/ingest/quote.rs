//! The sender's own text of a reply: quotes, attribution lines and
//! signatures removed.
//!
//! Deliberately simple: the text above the first quote marker, trimmed. We
//! do not pick answers out from between quoted blocks; the raw message is
//! kept whole for anyone who needs them. Markers, first one wins:
//! - our own separator line (`-- reply above this line --`, any case);
//! - a `>`-quoted block that runs to the end (followed only by more quotes,
//!   attributions, a signature or a trailer). A `>` block with the sender's
//!   text after it is an interleaved answer or a pasted `>>>` prompt, and
//!   stays part of the own text;
//! - an attribution line ("On … wrote:" and its Estonian, Finnish, German,
//!   Czech, Polish, Russian, French … forms), also when the client wrapped
//!   it over two lines;
//! - a separator such as `-----Original Message-----` (and localised forms);
//! - Outlook's header block (`From:` followed by `Sent:`/`To:`/`Subject:`,
//!   localised), with the `______` rule Outlook puts above it.
//!
//! When nothing stands above the first marker (bottom-posting, as
//! Thunderbird users do), the text below the quoted block is taken instead.
//! [`own_text`] then drops the signature (after a `-- ` line) and mobile
//! trailers such as "Sent from my iPhone".

/// Returns the text above quoted history and signature, trimmed. Empty when
/// the sender wrote nothing of their own (e.g. a bare forward).
pub fn own_text(text: &str) -> String {
    strip_signature(&strip_list_footer(&strip_quoted(text)))
}

/// Mailman and similar lists append a footer under a rule of underscores
/// ("____ / USRP-users mailing list / To unsubscribe …"). A team that keeps
/// a list in front of the desk would otherwise see it in every preview.
fn strip_list_footer(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim();
        if t.len() >= 10 && t.chars().all(|c| c == '_') {
            let below = lines[i + 1..]
                .iter()
                .take(4)
                .any(|n| contains_ci(n, "mailing list") || contains_ci(n, "unsubscribe"));
            if below {
                return join_trimmed(&lines[..i]);
            }
        }
    }
    text.to_string()
}

/// Quoted history removed, signature kept (what talon calls the reply).
fn strip_quoted(text: &str) -> String {
    let all: Vec<&str> = text.lines().collect();
    // Our separator: everything below it is our own mail being quoted,
    // however the client quoted it.
    let end = all
        .iter()
        .position(|l| contains_ci(l, "reply above this line"))
        .unwrap_or(all.len());
    let lines = &all[..end];

    let mut start = 0;
    while start < lines.len() {
        let Some((cut, kind)) = first_marker(lines, start) else {
            return join_trimmed(&lines[start..]);
        };
        let above = join_trimmed(&lines[start..cut]);
        if !above.is_empty() {
            return above;
        }
        match kind {
            // Bottom-posting: skip the attribution and the quoted lines and
            // read what follows.
            Marker::Attribution | Marker::Quote => {
                start = skip_quoted(lines, cut).max(cut + 1);
            }
            // After a separator or a header block comes the old message
            // itself, unquoted: nothing of the sender's own follows.
            Marker::Separator | Marker::HeaderBlock => return String::new(),
        }
    }
    String::new()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Quote,
    Attribution,
    Separator,
    HeaderBlock,
}

/// The first quote marker at or after `from`: the line where the quoted
/// part starts, and what kind of marker it is.
fn first_marker(lines: &[&str], from: usize) -> Option<(usize, Marker)> {
    let mut i = from;
    while i < lines.len() {
        let l = lines[i].trim();
        if l.is_empty() {
            i += 1;
            continue;
        }
        if l.starts_with('>') {
            if quoted_to_end(lines, i) {
                return Some((i, Marker::Quote));
            }
            // Kept as own text: step over the whole block at once (checking
            // each of its lines again would be quadratic).
            while i < lines.len() && lines[i].trim_start().starts_with('>') {
                i += 1;
            }
            continue;
        }
        if is_separator(l) {
            return Some((i, Marker::Separator));
        }
        if is_outlook_rule(l)
            && next_nonblank(lines, i + 1, 2).is_some_and(|j| is_from_header(lines[j]))
        {
            return Some((i, Marker::Separator));
        }
        if is_from_header(l) && header_lines_follow(lines, i + 1) {
            return Some((i, Marker::HeaderBlock));
        }
        if let Some(at) = attribution_start(lines, i, from) {
            return Some((at, Marker::Attribution));
        }
        i += 1;
    }
    None
}

/// Is the `>` block at `i` the quoted tail of the message: nothing after it
/// but quotes, blank lines, attributions, separators, a signature or a
/// trailer?
fn quoted_to_end(lines: &[&str], i: usize) -> bool {
    for j in i..lines.len() {
        let l = lines[j].trim();
        if l.is_empty() || l.starts_with('>') || is_trailer(l) {
            continue;
        }
        if lines[j].trim_end() == "--"
            || is_separator(l)
            || is_outlook_rule(l)
            || (is_from_header(l) && header_lines_follow(lines, j + 1))
        {
            return true;
        }
        if attribution_start(lines, j, j).is_some() {
            continue;
        }
        if attribution_start(lines, j + 1, j).is_some_and(|at| at == j) {
            // First line of a wrapped attribution.
            continue;
        }
        return false;
    }
    true
}

/// From `i` (an attribution or a quoted line): past attribution, quoted and
/// blank lines, to where unquoted text resumes.
fn skip_quoted(lines: &[&str], i: usize) -> usize {
    let mut j = i;
    // The attribution itself (one or two lines) is not quoted.
    while j < lines.len() && !lines[j].trim_start().starts_with('>') && j < i + 2 {
        let l = lines[j].trim();
        if l.is_empty() {
            break;
        }
        j += 1;
        if ends_with_colon(l) {
            break;
        }
    }
    while j < lines.len() {
        let l = lines[j].trim();
        if l.is_empty() || l.starts_with('>') {
            j += 1;
        } else {
            break;
        }
    }
    j
}

fn next_nonblank(lines: &[&str], from: usize, within: usize) -> Option<usize> {
    (from..lines.len().min(from + within + 1)).find(|&j| !lines[j].trim().is_empty())
}

// --- attribution lines -------------------------------------------------

/// Words that end an attribution ("… wrote:") or stand in it before a colon
/// at its end ("Am … schrieb Bob <b@x>:", "Bob kirjoitti 3.4.2012 kello 16.19:").
const ATTRIBUTION_WORDS: &[&str] = &[
    "wrote",      // English
    "kirjutas",   // Estonian
    "kirjoitti",  // Finnish
    "schrieb",    // German
    "napsal",     // Czech (napsal, napsala, napsal(a))
    "napisał",    // Polish (napisał, napisała, napisał(a))
    "pisze",      // Polish Thunderbird
    "написал",    // Russian (написал, написала, написал(а))
    "a écrit",    // French
    "schreef",    // Dutch
    "geschreven", // Dutch Apple Mail
    "escribió",   // Spanish
    "scritto",    // Italian ("ha scritto")
    "skrev",      // Swedish, Danish, Norwegian
    "escreveu",   // Portuguese
];

/// How attributions start: "On …", "Am …", "Le …", a date, "--- On …".
const OPENERS: &[&str] = &[
    "on ", "am ", "le ", "el ", "il ", "op ", "den ", "dne ", "w dniu ", "em ", "quoting ",
];

/// If line `i` ends an attribution, the line where it starts (`i`, or `i-1`
/// when the client wrapped it; never before `floor`).
fn attribution_start(lines: &[&str], i: usize, floor: usize) -> Option<usize> {
    let cur = lines.get(i)?.trim();
    if !ends_with_colon(cur) || cur.chars().count() > 300 || !has_attribution_word(cur) {
        return None;
    }
    let prev = (i > floor)
        .then(|| lines[i - 1].trim())
        .filter(|p| !p.is_empty() && !p.starts_with('>') && !p.ends_with(['.', '!', '?']));
    let next_is_quote =
        next_nonblank(lines, i + 1, 3).is_some_and(|j| lines[j].trim_start().starts_with('>'));

    // Wrapped: "On Mon, Apr 2, 2012 at 6:26 PM, Megan One <x@gmail.com>" /
    // "wrote:", or Android's date line / "<addr> написал:".
    if let Some(p) = prev {
        if !starts_with_opener(cur) && (starts_with_opener(p) || has_time_or_date(p)) {
            return Some(i - 1);
        }
    }
    let looks_like = starts_with_opener(cur)
        || has_time_or_date(cur)
        || (cur.contains('@') && cur.chars().any(|c| c.is_ascii_digit()));
    (looks_like || next_is_quote).then_some(i)
}

fn ends_with_colon(l: &str) -> bool {
    l.trim_end().ends_with(':')
}

fn has_attribution_word(l: &str) -> bool {
    let lower = l.to_lowercase();
    ATTRIBUTION_WORDS.iter().any(|w| {
        lower.match_indices(w).any(|(at, _)| {
            // A word of its own: not "rewrote", "overwrote".
            at == 0
                || !lower[..at]
                    .chars()
                    .next_back()
                    .is_some_and(char::is_alphanumeric)
        })
    })
}

fn starts_with_opener(l: &str) -> bool {
    // "--- On Wed, 4/4/12, x wrote:" (Yahoo) and "*On …*" (bold in HTML).
    let l = l.trim_start_matches(['-', '*', ' ']);
    l.starts_with(|c: char| c.is_ascii_digit()) || OPENERS.iter().any(|o| starts_with_ci(l, o))
}

/// A clock time ("16:19", "16.19") or a numeric date ("02.04.2012",
/// "4/4/12"): attributions carry one, own sentences rarely do.
fn has_time_or_date(l: &str) -> bool {
    let b = l.as_bytes();
    b.windows(4).any(|w| {
        w[0].is_ascii_digit()
            && matches!(w[1], b':' | b'.' | b'/')
            && w[2].is_ascii_digit()
            && w[3].is_ascii_digit()
    }) || b
        .windows(3)
        .any(|w| w[0].is_ascii_digit() && w[1] == b'/' && w[2].is_ascii_digit())
}

// --- separators and Outlook header blocks -------------------------------

/// `-----Original Message-----` and its translations (Outlook, Yahoo, AOL,
/// Comcast, Thunderbird write it with varying dashes and spaces).
const SEPARATOR_PHRASES: &[&str] = &[
    "original message",
    "ursprüngliche nachricht",
    "originalnachricht",
    "alkuperäinen viesti",
    "původní zpráva",
    "oryginalna wiadomość",
    "wiadomość oryginalna",
    "algne sõnum",
    "algsõnum",
    "message d'origine",
    "message original",
    "mail original", // French Zimbra
    "исходное сообщение",
    "oorspronkelijk bericht",
    "ursprungligt meddelande",
    "oprindelig meddelelse",
    "opprinnelig melding",
    "messaggio originale",
    "mensaje original",
    "mensagem original",
];

fn is_separator(l: &str) -> bool {
    if !l.starts_with("--") {
        return false;
    }
    let inner = l.trim_matches(|c: char| c == '-' || c.is_whitespace());
    SEPARATOR_PHRASES
        .iter()
        .any(|p| inner.eq_ignore_ascii_case(p) || eq_ci(inner, p))
}

/// Outlook's `________________________________` above its header block.
fn is_outlook_rule(l: &str) -> bool {
    l.len() >= 10 && l.bytes().all(|b| b == b'_')
}

const FROM_LABELS: &[&str] = &[
    "from",
    "von",
    "lähettäjä",
    "od",
    "saatja",
    "de",
    "van",
    "från",
    "fra",
    "da",
    "от",
    "від",
    "发件人", // Chinese (simplified) Outlook
];

const OTHER_LABELS: &[&str] = &[
    // English
    "sent",
    "date",
    "to",
    "subject",
    "cc",
    // German
    "gesendet",
    "datum",
    "an",
    "betreff",
    // Finnish
    "lähetetty",
    "vastaanottaja",
    "aihe",
    "päivämäärä",
    "kopio",
    // Czech
    "odesláno",
    "komu",
    "předmět",
    "kopie",
    // Estonian
    "saadetud",
    "adressaat",
    "kellele",
    "teema",
    "koopia",
    // Polish
    "wysłano",
    "do",
    "temat",
    "data",
    // Russian
    "отправлено",
    "кому",
    "тема",
    "дата",
    "копия",
    // French, Dutch, Swedish, Danish/Norwegian, Italian, Spanish
    "envoyé",
    "à",
    "objet",
    "verzonden",
    "aan",
    "onderwerp",
    "skickat",
    "till",
    "ämne",
    "sendt",
    "til",
    "emne",
    "inviato",
    "a",
    "oggetto",
    "enviado",
    "para",
    "asunto",
    // Chinese (simplified) Outlook: sent, to, cc, subject
    "发送时间",
    "收件人",
    "抄送",
    "主题",
];

/// `From: …`, `*From:* …` (Outlook HTML turned to text), `Von: …` …
fn header_label(l: &str) -> Option<String> {
    let l = l.trim().trim_start_matches('*');
    let colon = l.find(':')?;
    if colon > 30 {
        return None;
    }
    let label = l[..colon]
        .trim()
        .trim_end_matches('*')
        .trim()
        .to_lowercase();
    (!label.is_empty()).then_some(label)
}

fn is_from_header(l: &str) -> bool {
    header_label(l).is_some_and(|label| FROM_LABELS.contains(&label.as_str()))
}

/// At least two more header lines (Sent/Date/To/Subject/Cc, localised)
/// within the next six: a quoted header block, not a sentence starting
/// "From:".
fn header_lines_follow(lines: &[&str], from: usize) -> bool {
    lines
        .iter()
        .skip(from)
        .take(6)
        .filter(|l| header_label(l).is_some_and(|label| OTHER_LABELS.contains(&label.as_str())))
        .count()
        >= 2
}

// --- signatures and trailers -------------------------------------------

/// Mobile and webmail trailers ("Sent from my iPhone" and translations);
/// matched at the start of a short line at the end of the own text.
const TRAILERS: &[&str] = &[
    "sent from my ",
    "sent from mail for windows",
    "sent from outlook",
    "sent from yahoo mail",
    "sent from samsung",
    "sent via ",
    "sent with ",
    "get outlook for ",
    "von meinem ",
    "gesendet von meinem ",
    "gesendet mit ",
    "envoyé de mon ",
    "lähetetty iphonesta",
    "lähetetty ",
    "saadetud minu ",
    "saadetud iphone",
    "odesláno z ",
    "wysłane z ",
    "отправлено с ",
    "enviado desde mi ",
    "verzonden vanaf mijn ",
    "skickat från min ",
    "inviato da ",
];

/// Cuts at a signature separator (`-- `, RFC 3676 §4.3; many clients drop
/// the trailing space) and drops mobile trailers at the end.
fn strip_signature(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    if let Some(i) = lines.iter().position(|l| l.trim_end() == "--") {
        lines.truncate(i);
    }
    loop {
        while lines.last().is_some_and(|l| l.trim().is_empty()) {
            lines.pop();
        }
        match lines.last() {
            Some(l) if is_trailer(l.trim()) => {
                lines.pop();
            }
            _ => break,
        }
    }
    join_trimmed(&lines)
}

fn is_trailer(l: &str) -> bool {
    l.chars().count() <= 80 && TRAILERS.iter().any(|t| starts_with_ci(l, t))
}

// --- helpers ------------------------------------------------------------

fn join_trimmed(lines: &[&str]) -> String {
    lines.join("\n").trim().to_string()
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    if prefix.is_ascii() {
        return s
            .get(..prefix.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(prefix));
    }
    let mut chars = s.chars();
    prefix.chars().all(|p| {
        chars
            .next()
            .is_some_and(|c| c.to_lowercase().eq(p.to_lowercase()))
    })
}

fn eq_ci(a: &str, b: &str) -> bool {
    a.chars().count() == b.chars().count() && starts_with_ci(a, b)
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    let n = needle.as_bytes();
    hay.len() >= n.len()
        && hay
            .as_bytes()
            .windows(n.len())
            .any(|w| w.eq_ignore_ascii_case(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::parse::fixtures::{emls, name, read};
    use crate::ingest::parse::parse;

    #[test]
    fn reply_fixtures_match_expected() {
        let mut checked = 0;
        for f in emls("replies") {
            let expected_path = f.with_extension("expected.txt");
            let Ok(expected) = std::fs::read_to_string(&expected_path) else {
                continue;
            };
            let n = name(&f);
            let p = parse(&read(&f));
            // The source (talon) strips quotes only and keeps signatures.
            assert_eq!(
                strip_quoted(&p.text).trim(),
                expected.trim(),
                "{n}: {:?}",
                p.text
            );
            // We also drop the signature and the mobile trailer: the two
            // expectations that keep one ("Sent from my iPhone", a Sparrow
            // "-- " block) reduce to their first line.
            let want = match n.as_str() {
                "talon-iphone.eml" | "talon-sparrow.eml" => "Hello",
                _ => expected.trim(),
            };
            assert_eq!(own_text(&p.text), want, "{n}");
            checked += 1;
        }
        assert_eq!(checked, 12);
    }

    #[test]
    fn reply_fixtures_without_expectation() {
        let p = parse(&crate::ingest::parse::fixtures::read_in(
            "replies",
            "talon-reply-quotations-share-block.eml",
        ));
        let own = own_text(&p.text);
        assert!(own.starts_with("Hi Katharine."), "{own:?}");
        assert!(own.ends_with("Joe XXX"), "{own:?}");
        let p = parse(&crate::ingest::parse::fixtures::read_in(
            "replies",
            "mail-raw_email_reply.eml",
        ));
        assert_eq!(own_text(&p.text), "Message body");
    }

    /// (what, reply text, expected own text)
    const CASES: &[(&str, &str, &str)] = &[
        ("plain text, nothing quoted", "Hello\n\nThanks,\nJane\n", "Hello\n\nThanks,\nJane"),
        ("empty", "", ""),
        ("only blanks", "\n  \n\t\n", ""),
        ("our separator", "Fixed, thanks!\n\n-- reply above this line --\nYour ticket SUP-12 ...", "Fixed, thanks!"),
        ("our separator quoted", "Fixed.\n\nOn Mon, 2 Jun 2025 at 10:00, Support <support@desk.test> wrote:\n> -- Reply ABOVE this line --\n> Ticket SUP-12", "Fixed."),
        ("our separator in other words", "Ok\n##- Please type your reply above this line -##\nold", "Ok"),
        ("quoted block", "Yes please.\n> Shall we?\n> Really?\n", "Yes please."),
        ("quoted block, then an older Outlook block", "Yes.\n> Shall we?\nFrom: Bob\nSent: Monday\nTo: Jane\n\nold", "Yes."),
        ("quoted block, then signature", "Yes.\n\n> Shall we?\n\n-- \nJane", "Yes."),
        ("interleaved answers stay", "Hi,\n> Which version?\n4.2\n> Which OS?\nLinux\n", "Hi,\n> Which version?\n4.2\n> Which OS?\nLinux"),
        ("interleaved, then old history", "Hi,\n> Which version?\n4.2\n\nOn Mon, 2 Jun 2025 at 10:00, Bob <b@x.test> wrote:\n> Which version?\n", "Hi,\n> Which version?\n4.2"),
        ("pasted Python prompt", "It fails:\n>>> import foo\nImportError: no foo\nWhat now?", "It fails:\n>>> import foo\nImportError: no foo\nWhat now?"),
        ("English Gmail", "Hello\n\nOn Mon, Apr 2, 2012 at 6:26 PM, Megan One <xxx@gmail.com> wrote:\n\n> Hi\n", "Hello"),
        ("English Gmail wrapped", "Hello\n\nOn Mon, Apr 2, 2012 at 6:26 PM, Megan One <xxx@gmail.com>\nwrote:\n\n> Hi\n", "Hello"),
        ("Apple Mail", "Hello\n\nOn 3 Apr 2012, at 16:19, bob <bob@example.com> wrote:\n\n> Hi", "Hello"),
        ("Thunderbird", "Hello\n\nOn 04/02/2012 06:26 PM, Megan One wrote:\n> Hi", "Hello"),
        ("Thunderbird bottom-posted", "On 04/02/2012 06:26 PM, Megan One wrote:\n> Hi\n> there\n\nHello back\n", "Hello back"),
        ("Estonian Gmail", "Tere\n\nE, 2. juuni 2025 kell 10:00 Mari <mari@example.ee> kirjutas:\n\n> Küsimus", "Tere"),
        ("Estonian Apple", "Tere\n\nMari kirjutas 2.06.2025 kell 10:00:\n\n> Küsimus", "Tere"),
        ("Finnish Gmail", "Moi\n\nma 2. kesäk. 2025 klo 10.00 Matti (matti@example.fi) kirjoitti:\n\n> Kysymys", "Moi"),
        ("Finnish Apple", "Moi\n\nMatti kirjoitti 2.6.2025 kello 10.00:\n\n> Kysymys", "Moi"),
        ("German", "Hallo\n\nAm 02.06.2025 um 10:00 schrieb Max Muster <max@example.de>:\n\n> Frage", "Hallo"),
        ("Czech", "Ahoj\n\nDne 2. 6. 2025 10:00 Jan Novák <jan@example.cz> napsal(a):\n\n> Dotaz", "Ahoj"),
        ("Polish", "Cześć\n\nW dniu 2.06.2025 o 10:00 Jan Kowalski <jan@example.pl> napisał(a):\n\n> Pytanie", "Cześć"),
        ("Russian wrapped (Android)", "Привет\n02.04.2012 14:20 пользователь \"bob@xxx.mailgun.org\" <\nbob@xxx.mailgun.org> написал:\n\n> Hi", "Привет"),
        ("Russian", "Привет\n\n2 июня 2025 г., в 10:00, Иван <ivan@example.ru> написал(а):\n\n> Вопрос", "Привет"),
        ("French", "Bonjour\n\nLe lun. 2 juin 2025 à 10:00, Jean <jean@example.fr> a écrit :\n\n> Question", "Bonjour"),
        ("Yahoo dashes", "Sure\n\n--- On Wed, 4/4/12, xxx@example.com <xxx@example.com> wrote:\n\nFrom: xxx", "Sure"),
        ("Outlook header block", "Hello\n\nFrom: Bob [mailto:bob@example.com]\nSent: Monday, June 2, 2025 10:00 AM\nTo: Support\nSubject: RE: Issue\n\nOld text", "Hello"),
        ("Outlook rule and bold block", "Hello\n\n________________________________\n*From:* Bob <bob@example.com>\n*Sent:* Monday\n*To:* Support\n*Subject:* Issue\n\nOld", "Hello"),
        ("Outlook rule then From", "Hi\n________________________________\nFrom: Bob <bob@example.com>\nSent: Monday\nTo: Support\n", "Hi"),
        ("Outlook German", "Danke\n\nVon: Max Muster <max@example.de>\nGesendet: Montag, 2. Juni 2025 10:00\nAn: Support\nBetreff: Problem\n\nAlt", "Danke"),
        ("Outlook Finnish", "Kiitos\n\nLähettäjä: Matti <matti@example.fi>\nLähetetty: maanantai 2. kesäkuuta 2025 10.00\nVastaanottaja: Tuki\nAihe: Ongelma\n", "Kiitos"),
        ("Outlook Czech", "Díky\n\nOd: Jan Novák <jan@example.cz>\nOdesláno: pondělí 2. června 2025 10:00\nKomu: Podpora\nPředmět: Problém\n", "Díky"),
        ("Outlook Chinese", "谢谢\n\n________________________________\n发件人: Marcus <m@example.com>\n发送时间: 2019年6月21日 16:18\n收件人: support@example.com\n主题: Re: AGC\n\nold", "谢谢"),
        ("Outlook Estonian", "Aitäh\n\nSaatja: Mari <mari@example.ee>\nSaadetud: esmaspäev, 2. juuni 2025 10:00\nAdressaat: Tugi\nTeema: Probleem\n", "Aitäh"),
        ("Original Message", "Hello\n\n-----Original Message-----\nFrom: bob\nSent: Mon\nTo: x\nSubject: Test\n\nHi", "Hello"),
        ("Original Message spaced", "Hello\n\n----- Original Message -----\nFrom: bob\n", "Hello"),
        ("Ursprüngliche Nachricht", "Danke\n-----Ursprüngliche Nachricht-----\nVon: x", "Danke"),
        ("Zimbra French", "Merci\n\n----- Mail original -----\nDe: \"Wade\" <w@example.com>\nÀ: x\n", "Merci"),
        ("Alkuperäinen viesti", "Kiitos\n-----Alkuperäinen viesti-----\nLähettäjä: x", "Kiitos"),
        ("Původní zpráva", "Díky\n-------- Původní zpráva --------\nOd: x", "Díky"),
        ("Sent from my iPhone", "Hello\n\nSent from my iPhone\n\nOn Apr 3, 2012, at 4:19 PM, bob <bob@example.com> wrote:\n\n> Hi", "Hello"),
        ("localised iPhone trailer", "Tere\n\nSaadetud minu iPhone'ist", "Tere"),
        ("Get Outlook for", "Ok\n\nGet Outlook for iOS<https://aka.ms/o0ukef>", "Ok"),
        ("signature", "Hello \n\n-- \nxxx\nSent with Sparrow (http://www.sparrowmailapp.com/?sig)", "Hello"),
        ("signature without trailing space", "Hello\n--\nJane Doe\nACME", "Hello"),
        ("CRLF", "Hello\r\n\r\nOn Mon, Apr 2, 2012 at 6:26 PM, Megan <m@x.com> wrote:\r\n> Hi\r\n", "Hello"),
        // Things that look like markers but are not.
        ("'wrote:' in a sentence", "Here is what I wrote:\nthe printer is broken", "Here is what I wrote:\nthe printer is broken"),
        ("a From: line in prose", "From: my home office I cannot print.\nPlease help.", "From: my home office I cannot print.\nPlease help."),
        ("'Sent from' mid-text", "Sent from my laptop this fails:\nerror 42", "Sent from my laptop this fails:\nerror 42"),
        ("dashes in prose", "Steps:\n-- open the app\n-- click print", "Steps:\n-- open the app\n-- click print"),
    ];

    #[test]
    fn quote_forms() {
        for (what, text, want) in CASES {
            assert_eq!(own_text(text), *want, "{what}");
        }
    }

    #[test]
    fn quoted_only_keeps_signatures() {
        assert_eq!(
            strip_quoted(
                "Hi\n-- \nJane\n\nOn Mon, 2 Jun 2025 at 10:00, Bob <b@x.test> wrote:\n> q"
            ),
            "Hi\n-- \nJane"
        );
    }

    #[test]
    fn every_fixture_text_goes_through() {
        let files = crate::ingest::parse::fixtures::all_emls();
        assert!(files.len() >= 295);
        for f in files {
            let p = parse(&read(&f));
            let own = own_text(&p.text);
            // Never longer than the text it came from (modulo trimming).
            assert!(own.len() <= p.text.len(), "{}", f.display());
        }
        // Odd shapes: lone markers, markers at the very end, no newline.
        for text in [
            ">",
            "--",
            "wrote:",
            "On x wrote:",
            "From: a\nTo: b\nSent: c",
            "_________________",
            "a\n>",
            "\n\n> x\nOn Mon wrote:",
        ] {
            let _ = own_text(text);
        }
    }

    #[test]
    fn long_interleaved_text_is_fast() {
        // A big quoted block followed by own text must not be re-scanned
        // line by line (quadratic).
        let text = format!("{}\nmy answer\n", "> quoted line\n".repeat(50_000));
        let t = std::time::Instant::now();
        assert!(own_text(&text).ends_with("my answer"));
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn a_bare_forward_has_no_own_text() {
        assert_eq!(
            own_text("-----Original Message-----\nFrom: bob\nSent: Mon\nTo: x\n\nHi"),
            ""
        );
        assert_eq!(own_text("> only\n> quoted"), "");
    }
}
