//! PAN scanner (I7): finds primary account numbers anywhere in a payload, before it is parsed, logged or stored.
//!
//! A *PAN-looking number* is a run of 13–19 digits, optionally grouped by single spaces or dashes, that
//! 1. stands alone (no digit directly before or after it),
//! 2. starts with an issuer identification number of a card network that issues such lengths, and
//! 3. passes the Luhn check.
//!
//! Rule 2 is what keeps long non-card numbers from tripping the scanner: one in ten random digit strings passes
//! Luhn, and PSP references are long digit strings (Adyen's `8412534564722331` in the shared fixtures passes Luhn;
//! its major-industry digit 8 is not a card network's). Timestamps (10 digits, or 13 starting with 1), amounts and
//! ids made of zeros fail rule 2 as well. See docs/adr/0003-pan-scanner.md.
//!
//! A match reports where it is and which network it looks like, never the digits.

use serde::Serialize;

/// Where a PAN-looking number sits in the scanned bytes. Deliberately holds no digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PanMatch {
    /// Byte offset of the first digit.
    pub start: usize,
    /// Byte offset one past the last digit.
    pub end: usize,
    /// Number of digits (13–19).
    pub digits: usize,
    /// The card network whose IIN range the number falls in.
    pub network: &'static str,
}

/// Every PAN-looking number in `bytes`, in order. Overlapping candidates inside one grouped run are reported once,
/// the longest first found.
pub fn scan(bytes: &[u8]) -> Vec<PanMatch> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && bytes[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        let run = Run::at(bytes, i);
        run.matches(bytes, &mut found);
        i = run.end.max(i + 1);
    }
    found
}

/// True if `bytes` contains at least one PAN-looking number.
pub fn contains_pan(bytes: &[u8]) -> bool {
    !scan(bytes).is_empty()
}

/// A copy of `bytes` with the digits of every match replaced by `*` except the last four (what PCI DSS allows to be
/// shown), so that a quarantine record keeps the payload's shape without the number.
pub fn redact(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for m in scan(bytes) {
        let mut keep = 4;
        for b in out[m.start..m.end].iter_mut().rev() {
            if b.is_ascii_digit() {
                if keep > 0 {
                    keep -= 1;
                } else {
                    *b = b'*';
                }
            }
        }
    }
    out
}

/// A maximal run of digit groups separated by single spaces or dashes.
struct Run {
    /// (start, end) byte offsets of each digit group.
    groups: Vec<(usize, usize)>,
    end: usize,
}

impl Run {
    fn at(bytes: &[u8], start: usize) -> Run {
        let mut groups = Vec::new();
        let mut g_start = start;
        let mut i = start;
        loop {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            groups.push((g_start, i));
            let separated = i + 1 < bytes.len() && matches!(bytes[i], b' ' | b'-') && bytes[i + 1].is_ascii_digit();
            if !separated {
                break;
            }
            i += 1;
            g_start = i;
        }
        Run { groups, end: i }
    }

    /// Candidates are whole runs of consecutive groups (a PAN is never split inside a group): `1000 4111 1111 1111
    /// 1111` holds the card `4111 1111 1111 1111` after an amount.
    fn matches(&self, bytes: &[u8], found: &mut Vec<PanMatch>) {
        let mut covered_until = 0;
        for first in 0..self.groups.len() {
            if self.groups[first].0 < covered_until {
                continue;
            }
            // Longest window first, so a match is reported once.
            for last in (first..self.groups.len()).rev() {
                let (start, end) = (self.groups[first].0, self.groups[last].1);
                let digits: Vec<u8> =
                    bytes[start..end].iter().filter(|b| b.is_ascii_digit()).map(|b| b - b'0').collect();
                if !(13..=19).contains(&digits.len()) {
                    continue;
                }
                if let Some(network) = network(&digits) {
                    if luhn_valid(&digits) {
                        found.push(PanMatch { start, end, digits: digits.len(), network });
                        covered_until = end;
                        break;
                    }
                }
            }
        }
    }
}

/// The Luhn (mod 10) check over digit values.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The card network whose IIN ranges and lengths admit `digits`, if any.
fn network(digits: &[u8]) -> Option<&'static str> {
    let prefix = |n: usize| digits.iter().take(n).fold(0u32, |acc, &d| acc * 10 + u32::from(d));
    let len = digits.len();
    let (p1, p2, p3, p4, p6) = (prefix(1), prefix(2), prefix(3), prefix(4), prefix(6));
    let network = match p1 {
        1 if len == 15 => "uatp",
        2 if (2221..=2720).contains(&p4) && len == 16 => "mastercard",
        2 if (2200..=2204).contains(&p4) && (16..=19).contains(&len) => "mir",
        3 if (p2 == 34 || p2 == 37) && len == 15 => "amex",
        3 if (3528..=3589).contains(&p4) && (16..=19).contains(&len) => "jcb",
        3 if ((300..=305).contains(&p3) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39)
            && (14..=19).contains(&len) =>
        {
            "diners"
        }
        4 if matches!(len, 13 | 16 | 19) => "visa",
        5 if (51..=55).contains(&p2) && len == 16 => "mastercard",
        5 if (p2 == 50 || (56..=59).contains(&p2)) && (13..=19).contains(&len) => "maestro",
        6 if (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || (622_126..=622_925).contains(&p6))
            && (16..=19).contains(&len) =>
        {
            "discover"
        }
        6 if p2 == 62 && (16..=19).contains(&len) => "unionpay",
        6 if (13..=19).contains(&len) => "maestro",
        8 if (p2 == 81 || p2 == 82) && (16..=19).contains(&len) => "unionpay",
        _ => return None,
    };
    Some(network)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published test card numbers (Stripe, Adyen and network test ranges), in the formats people paste them.
    const TEST_CARDS: &[(&str, &str)] = &[
        ("4242424242424242", "visa"),
        ("4000 0566 5566 5556", "visa"),
        ("4111-1111-1111-1111", "visa"),
        ("4222222222222", "visa"),
        ("5555555555554444", "mastercard"),
        ("2223003122003222", "mastercard"),
        ("5200828282828210", "mastercard"),
        ("378282246310005", "amex"),
        ("3714 496353 98431", "amex"),
        ("6011111111111117", "discover"),
        ("6011 0009 9013 9424", "discover"),
        ("3056930009020004", "diners"),
        ("36227206271667", "diners"),
        ("3566002020360505", "jcb"),
        ("6200000000000005", "unionpay"),
        ("6759649826438453", "maestro"),
        ("2200000000000004", "mir"),
    ];

    #[test]
    fn finds_real_test_cards_in_any_position() {
        for (card, network) in TEST_CARDS {
            let bare = card.replace([' ', '-'], "");
            for (payload, expected) in [
                (card.to_string(), *card),
                (format!("{{\"number\":\"{card}\"}}"), card),
                (format!("{{\"reason\":\"card {card} declined\"}}"), card),
                (format!("{{\"value\": {bare} }}"), bare.as_str()),
                (format!("x{card}y"), card),
            ] {
                let found = scan(payload.as_bytes());
                assert_eq!(found.len(), 1, "{payload}");
                assert_eq!(found[0].network, *network, "{payload}");
                assert_eq!(&payload[found[0].start..found[0].end], expected);
            }
        }
    }

    #[test]
    fn finds_a_card_that_follows_another_number_in_a_grouped_run() {
        let payload = b"ref 1000 4111 1111 1111 1111 end";
        let found = scan(payload);
        assert_eq!(found.len(), 1);
        assert_eq!(&payload[found[0].start..found[0].end], b"4111 1111 1111 1111");
    }

    #[test]
    fn long_non_card_numbers_do_not_trip_it() {
        let benign = [
            "1648320032",       // Unix seconds (Stripe `created`)
            "1700000000000",    // Unix milliseconds
            "1700000000000000", // Unix microseconds
            "8412534564722331", // Adyen pspReference that passes Luhn (fixture cancellation-true.json)
            "9913333333333333", // Adyen originalReference (fixture chargeback.json)
            "8313842560770001", // Adyen merchantReference (fixture authorisation-true.json)
            "ch_000000000000000000000000",
            "acct_0000000000000000",
            "01-4847-9891-0092",    // phone number inside a Stripe fixture
            "42424242424242424242", // 20 digits: too long to be a PAN, and no window of a longer number is a PAN
            "4242424242424241",     // Visa-shaped but fails Luhn
            "amount 123456789012",  // 12 digits
            "2026-11-21 13:09:00",
        ];
        for b in benign {
            assert_eq!(scan(b.as_bytes()), vec![], "{b}");
        }
    }

    #[test]
    fn redaction_keeps_the_last_four_and_the_shape() {
        let payload = br#"{"a":"4111 1111 1111 1111","b":"5555555555554444","c":"1648320032"}"#;
        let red = String::from_utf8(redact(payload)).unwrap();
        assert_eq!(red, r#"{"a":"**** **** **** 1111","b":"************4444","c":"1648320032"}"#);
        assert!(!contains_pan(red.as_bytes()));
    }

    #[test]
    fn luhn_known_answers() {
        let digits = |s: &str| s.bytes().map(|b| b - b'0').collect::<Vec<_>>();
        assert!(luhn_valid(&digits("79927398713")));
        assert!(!luhn_valid(&digits("79927398710")));
        assert!(luhn_valid(&digits("4242424242424242")));
    }
}
