//! IAB TCF v2 consent strings ("TC strings", what EU consent banners
//! write): read where they lie, without copying or allocating, and the
//! decision a policy's `consent.tcf` rule makes from them (pure).
//!
//! A TC string is base64url segments joined by `.`. The first is the core
//! segment (version 2, the purpose and vendor signals and the publisher's
//! restrictions); the optional others (disclosed vendors, allowed vendors,
//! publisher purposes) are checked for shape only, because the decision
//! reads the core alone. Field layout: IAB Tech Lab, "Transparency and
//! Consent String with Global Vendor & CMP List Formats", v2.2.
//!
//! Fails closed: a string that cannot be read grants nothing, and says why
//! ([`Invalid`]), so that unreadable strings can be counted.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

/// Why a TC string cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not base64url, cut short, a field out of range, or not a string.
    Malformed,
    /// A core segment of a version other than 2 (TCF v1 strings are retired).
    UnsupportedVersion,
}

impl Invalid {
    /// Every reason, in declaration order (the metric's label values).
    pub const ALL: [Invalid; 2] = [Invalid::Malformed, Invalid::UnsupportedVersion];

    /// The metric label.
    pub fn code(self) -> &'static str {
        match self {
            Invalid::Malformed => "malformed",
            Invalid::UnsupportedVersion => "unsupported_version",
        }
    }
}

/// The purposes TCF v2.2 defines, by number (1-based) and name.
pub const PURPOSES: [&str; 11] = [
    "Store and/or access information on a device",
    "Use limited data to select advertising",
    "Create profiles for personalised advertising",
    "Use profiles to select personalised advertising",
    "Create profiles to personalise content",
    "Use profiles to select personalised content",
    "Measure advertising performance",
    "Measure content performance",
    "Understand audiences through statistics or combinations of data from different sources",
    "Develop and improve services",
    "Use limited data to select content",
];

/// Purposes TCF v2.2 never allows on legitimate interest (only on consent).
pub const CONSENT_ONLY: [u8; 5] = [1, 3, 4, 5, 6];

/// The name of purpose `n` (1-based), if TCF v2.2 defines it.
pub fn purpose_name(n: u8) -> Option<&'static str> {
    PURPOSES.get(usize::from(n).checked_sub(1)?).copied()
}

/// A policy's TCF rule, compiled: every purpose must be granted, by consent
/// or (where allowed) legitimate interest, and to `vendor` when given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Bit `n - 1` set for each required purpose `n` (1..=24).
    pub purposes: u32,
    /// Bit `n - 1` set for each purpose that legitimate interest may grant.
    pub legitimate_interest: u32,
    pub vendor: Option<u16>,
}

/// What a TC string says for one vendor (or for purposes alone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Signals {
    purpose_consent: u32,
    purpose_li: u32,
    vendor_consent: bool,
    vendor_li: bool,
    /// Per publisher restriction type, bit `n - 1` for each purpose `n` the
    /// publisher restricts for the vendor.
    not_allowed: u32,
    require_consent: u32,
    require_li: u32,
}

impl Rule {
    /// Whether the TC string `tc` grants every purpose of the rule.
    ///
    /// Per purpose `p`: a publisher restriction "not allowed" for the
    /// vendor denies it; "require consent" needs consent, "require
    /// legitimate interest" needs legitimate interest (allowed by the rule
    /// for `p`); with no restriction, either does. Consent to `p` is the
    /// purpose's consent bit and, with a vendor, the vendor's consent bit;
    /// legitimate interest likewise with the legitimate-interest bits.
    pub fn grants(&self, tc: &[u8]) -> Result<bool, Invalid> {
        let s = read(tc, self.vendor)?;
        let vendor_named = self.vendor.is_some();
        let consent = s.purpose_consent & mask(!vendor_named || s.vendor_consent);
        let li = s.purpose_li & self.legitimate_interest & mask(!vendor_named || s.vendor_li);
        let restricted = s.require_consent | s.require_li;
        let granted = (consent | li) & !restricted
            | consent & s.require_consent & !s.require_li
            | li & s.require_li & !s.require_consent
            | consent & li & s.require_consent & s.require_li;
        let granted = granted & !s.not_allowed;
        Ok(self.purposes & granted == self.purposes)
    }
}

/// All ones when `on`, else zero.
fn mask(on: bool) -> u32 {
    if on { u32::MAX } else { 0 }
}

/// Read the signals for `vendor` from a whole TC string (all segments).
fn read(tc: &[u8], vendor: Option<u16>) -> Result<Signals, Invalid> {
    let mut segments = tc.split(|&b| b == b'.');
    let core = Bits::new(segments.next().unwrap_or_default())?;
    let signals = core_segment(core, vendor)?;
    for segment in segments {
        other_segment(Bits::new(segment)?)?;
    }
    Ok(signals)
}

/// Bits the decision skips after the CMP id: CMP version (12), consent
/// screen (6), consent language (12), vendor list version (12), TCF policy
/// version (6), is service specific (1), use non-standard texts (1),
/// special feature opt-ins (12).
const CORE_SKIPPED: usize = 12 + 6 + 12 + 12 + 6 + 1 + 1 + 12;

fn core_segment(mut b: Bits<'_>, vendor: Option<u16>) -> Result<Signals, Invalid> {
    if b.take(6)? != 2 {
        // A first segment that is not a version-2 core. Segment types sit in
        // the same first three bits, so a non-core first segment lands here
        // too: the core must come first.
        return Err(Invalid::UnsupportedVersion);
    }
    b.skip(36 + 36)?; // created, last updated
    // The checks the IAB's reference decoder makes of the header: CMP ids
    // start at 2, and a country code letter is one of `A` to `z`.
    if b.take(12)? < 2 {
        return Err(Invalid::Malformed);
    }
    b.skip(CORE_SKIPPED)?;
    // Purpose 1 is the first (most significant) bit of each field.
    let purpose_consent = b.take(24)?.reverse_bits() >> 8;
    let purpose_li = b.take(24)?.reverse_bits() >> 8;
    b.skip(1)?; // purpose one treatment
    if b.take(6)? > 57 || b.take(6)? > 57 {
        return Err(Invalid::Malformed);
    }
    let vendor_consent = vendor_section(&mut b, vendor)?;
    let vendor_li = vendor_section(&mut b, vendor)?;
    let mut s = Signals {
        purpose_consent,
        purpose_li,
        vendor_consent,
        vendor_li,
        ..Signals::default()
    };
    // Publisher restrictions: purpose (6), type (2), then a range list of vendors.
    for _ in 0..b.take(12)? {
        let purpose = b.take(6)?;
        let kind = b.take(2)?;
        let entries = b.take(12)?;
        if entries > 0 && (purpose == 0 || kind == 3) {
            return Err(Invalid::Malformed);
        }
        let mut applies = false;
        for _ in 0..entries {
            let (start, end) = range_entry(&mut b)?;
            if end < start {
                return Err(Invalid::Malformed);
            }
            applies |= vendor.is_some_and(|v| (start..=end).contains(&v));
        }
        // Purposes beyond 24 have no consent bits for a rule to require.
        if applies && (1..=24).contains(&purpose) {
            let bit = 1 << (purpose - 1);
            match kind {
                0 => s.not_allowed |= bit,
                1 => s.require_consent |= bit,
                _ => s.require_li |= bit,
            }
        }
    }
    Ok(s)
}

/// A segment after the core: disclosed vendors (1), allowed vendors (2) or
/// publisher purposes (3), read to check its shape.
fn other_segment(mut b: Bits<'_>) -> Result<(), Invalid> {
    match b.take(3)? {
        1 | 2 => vendor_section(&mut b, None).map(drop),
        3 => {
            b.skip(24 + 24)?; // publisher purposes: consent, legitimate interest
            let custom = b.take(6)? as usize;
            b.skip(custom * 2) // custom purposes: consent, legitimate interest
        }
        // A second core segment, or a type TCF does not define.
        _ => Err(Invalid::Malformed),
    }
}

/// A vendor section (max vendor id, then a bit field or a range list):
/// whether `vendor`'s bit is set. Vendor ids start at 1.
fn vendor_section(b: &mut Bits<'_>, vendor: Option<u16>) -> Result<bool, Invalid> {
    let max_id = b.take(16)? as usize;
    if b.take(1)? == 0 {
        let field = b.pos;
        b.skip(max_id)?;
        return Ok(match vendor {
            Some(v) if v >= 1 && usize::from(v) <= max_id => {
                b.bit_at(field + usize::from(v) - 1)? == 1
            }
            _ => false,
        });
    }
    let mut found = false;
    for _ in 0..b.take(12)? {
        let (start, end) = range_entry(b)?;
        if start == 0 {
            return Err(Invalid::Malformed);
        }
        // A range that ends before it starts names no vendor.
        found |= vendor.is_some_and(|v| (start..=end).contains(&v));
    }
    Ok(found)
}

/// One range entry: a single vendor id, or a first and last (16 bits each).
fn range_entry(b: &mut Bits<'_>) -> Result<(u16, u16), Invalid> {
    let is_range = b.take(1)? == 1;
    let start = b.take(16)? as u16;
    let end = if is_range { b.take(16)? as u16 } else { start };
    Ok((start, end))
}

/// A cursor over the bits of one base64url segment, read in place.
struct Bits<'a> {
    chars: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    /// A non-empty segment of base64url characters (no padding).
    fn new(chars: &'a [u8]) -> Result<Bits<'a>, Invalid> {
        if chars.is_empty() || chars.iter().any(|&c| sextet(c) == NOT_BASE64URL) {
            return Err(Invalid::Malformed);
        }
        Ok(Bits { chars, pos: 0 })
    }

    fn len(&self) -> usize {
        self.chars.len().saturating_mul(6)
    }

    /// The six bits of character `i` (checked base64url by [`Bits::new`]).
    fn sextet(&self, i: usize) -> Result<u32, Invalid> {
        let c = self.chars.get(i).ok_or(Invalid::Malformed)?;
        Ok(u32::from(sextet(*c)))
    }

    fn bit_at(&self, pos: usize) -> Result<u32, Invalid> {
        Ok(self.sextet(pos / 6)? >> (5 - pos % 6) & 1)
    }

    fn skip(&mut self, n: usize) -> Result<(), Invalid> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.len());
        self.pos = end.ok_or(Invalid::Malformed)?;
        Ok(())
    }

    /// The next `n` bits (at most 32), most significant first: the
    /// characters that hold them (at most 7) gathered into one word.
    fn take(&mut self, n: u32) -> Result<u32, Invalid> {
        let start = self.pos;
        self.skip(n as usize)?;
        if n == 0 {
            return Ok(0);
        }
        let (first, last) = (start / 6, (self.pos - 1) / 6);
        let chars = self.chars.get(first..=last).ok_or(Invalid::Malformed)?;
        let word = chars
            .iter()
            .fold(0u64, |w, &c| w << 6 | u64::from(sextet(c)));
        let trailing = (last + 1) * 6 - self.pos;
        Ok((word >> trailing & ((1u64 << n) - 1)) as u32)
    }
}

/// The six bits byte `c` stands for, or [`NOT_BASE64URL`].
fn sextet(c: u8) -> u8 {
    SEXTETS
        .get(usize::from(c))
        .copied()
        .unwrap_or(NOT_BASE64URL)
}

/// Marks a byte that is not a base64url character in [`SEXTETS`].
const NOT_BASE64URL: u8 = 0xFF;

/// The six bits each base64url character stands for. Built when compiling:
/// an index out of range would fail the build, never a run.
#[allow(clippy::indexing_slicing)]
const SEXTETS: [u8; 256] = {
    let mut table = [NOT_BASE64URL; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut i = 0;
    while i < alphabet.len() {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Bits to base64url, zero-padded to whole characters.
    fn encode(bits: &str) -> String {
        const DICT: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut bits = bits.replace(' ', "");
        while !bits.len().is_multiple_of(6) {
            bits.push('0');
        }
        bits.as_bytes()
            .chunks(6)
            .map(|c| {
                DICT[usize::from_str_radix(std::str::from_utf8(c).unwrap(), 2).unwrap()] as char
            })
            .collect()
    }

    fn n(v: u32, width: usize) -> String {
        format!("{v:0width$b}")
    }

    /// A core segment built field by field from the spec's layout.
    fn core(
        version: u32,
        consent: &[u8],
        li: &[u8],
        vendors: &str,
        vendors_li: &str,
        restrictions: &str,
    ) -> String {
        let purposes = |ps: &[u8]| {
            (1..=24)
                .map(|p| if ps.contains(&p) { '1' } else { '0' })
                .collect::<String>()
        };
        let mut bits = n(version, 6);
        bits += &"0".repeat(72);
        bits += &n(2, 12); // CMP id
        bits += &"0".repeat(CORE_SKIPPED);
        bits += &purposes(consent);
        bits += &purposes(li);
        bits += &"0".repeat(13);
        bits += vendors;
        bits += vendors_li;
        bits += restrictions;
        encode(&bits)
    }

    /// A vendor section as a bit field over `max` ids.
    fn field(max: u16, set: &[u16]) -> String {
        let mut s = n(u32::from(max), 16) + "0";
        s += &(1..=max)
            .map(|v| if set.contains(&v) { '1' } else { '0' })
            .collect::<String>();
        s
    }

    /// A vendor section as a range list.
    fn ranges(max: u16, entries: &[(u16, u16)]) -> String {
        let mut s = n(u32::from(max), 16) + "1" + &n(entries.len() as u32, 12);
        for &(a, b) in entries {
            if a == b {
                s += &("0".to_string() + &n(u32::from(a), 16));
            } else {
                s += &("1".to_string() + &n(u32::from(a), 16) + &n(u32::from(b), 16));
            }
        }
        s
    }

    fn restriction(purpose: u32, kind: u32, entries: &[(u16, u16)]) -> String {
        n(purpose, 6) + &n(kind, 2) + &ranges(0, entries)[17..]
    }

    fn rule(purposes: &[u8], li: &[u8], vendor: Option<u16>) -> Rule {
        let m = |ps: &[u8]| ps.iter().fold(0u32, |m, p| m | 1 << (p - 1));
        Rule {
            purposes: m(purposes),
            legitimate_interest: m(li),
            vendor,
        }
    }

    const NO_RESTRICTIONS: &str = "000000000000";

    #[test]
    fn purposes_alone_need_every_consent_bit() {
        let tc = core(
            2,
            &[1, 7],
            &[],
            &field(0, &[]),
            &field(0, &[]),
            NO_RESTRICTIONS,
        );
        assert_eq!(rule(&[1, 7], &[], None).grants(tc.as_bytes()), Ok(true));
        assert_eq!(rule(&[1, 7, 8], &[], None).grants(tc.as_bytes()), Ok(false));
    }

    #[test]
    fn legitimate_interest_counts_only_where_the_rule_allows_it() {
        let tc = core(
            2,
            &[1],
            &[7],
            &field(0, &[]),
            &field(0, &[]),
            NO_RESTRICTIONS,
        );
        assert_eq!(rule(&[1, 7], &[7], None).grants(tc.as_bytes()), Ok(true));
        assert_eq!(rule(&[1, 7], &[], None).grants(tc.as_bytes()), Ok(false));
    }

    #[test]
    fn a_named_vendor_needs_its_own_bit_in_either_encoding() {
        for vendors in [field(40, &[3, 38]), ranges(40, &[(3, 3), (30, 40)])] {
            let tc = core(2, &[1], &[], &vendors, &field(0, &[]), NO_RESTRICTIONS);
            assert_eq!(
                rule(&[1], &[], Some(38)).grants(tc.as_bytes()),
                Ok(true),
                "{tc}"
            );
            assert_eq!(
                rule(&[1], &[], Some(3)).grants(tc.as_bytes()),
                Ok(true),
                "{tc}"
            );
            assert_eq!(
                rule(&[1], &[], Some(4)).grants(tc.as_bytes()),
                Ok(false),
                "{tc}"
            );
            assert_eq!(
                rule(&[1], &[], Some(41)).grants(tc.as_bytes()),
                Ok(false),
                "{tc}"
            );
        }
    }

    #[test]
    fn publisher_restrictions_bind_the_vendor() {
        let both = |r: &str| core(2, &[7], &[7], &field(5, &[5]), &field(5, &[5]), r);
        let r7 = rule(&[7], &[7], Some(5));
        // Not allowed: denied, whatever the signals.
        let tc = both(&(n(1, 12) + &restriction(7, 0, &[(1, 9)])));
        assert_eq!(r7.grants(tc.as_bytes()), Ok(false));
        // A restriction for another vendor changes nothing.
        let tc = both(&(n(1, 12) + &restriction(7, 0, &[(6, 9)])));
        assert_eq!(r7.grants(tc.as_bytes()), Ok(true));
        // Require consent: legitimate interest alone no longer grants.
        let li_only = core(
            2,
            &[],
            &[7],
            &field(5, &[]),
            &field(5, &[5]),
            &(n(1, 12) + &restriction(7, 1, &[(5, 5)])),
        );
        assert_eq!(r7.grants(li_only.as_bytes()), Ok(false));
        // Require legitimate interest: consent alone no longer grants, nor
        // does legitimate interest the rule does not allow.
        let consent_only = core(
            2,
            &[7],
            &[],
            &field(5, &[5]),
            &field(5, &[]),
            &(n(1, 12) + &restriction(7, 2, &[(5, 5)])),
        );
        assert_eq!(r7.grants(consent_only.as_bytes()), Ok(false));
        let tc = both(&(n(1, 12) + &restriction(7, 2, &[(5, 5)])));
        assert_eq!(r7.grants(tc.as_bytes()), Ok(true));
        assert_eq!(rule(&[7], &[], Some(5)).grants(tc.as_bytes()), Ok(false));
    }

    #[test]
    fn unreadable_strings_say_why() {
        let good = core(
            2,
            &[1],
            &[],
            &field(0, &[]),
            &field(0, &[]),
            NO_RESTRICTIONS,
        );
        let r = rule(&[1], &[], None);
        assert_eq!(r.grants(good.as_bytes()), Ok(true));
        let v1 = core(
            1,
            &[1],
            &[],
            &field(0, &[]),
            &field(0, &[]),
            NO_RESTRICTIONS,
        );
        assert_eq!(r.grants(v1.as_bytes()), Err(Invalid::UnsupportedVersion));
        for bad in [
            "",
            "C",
            &good[..good.len() - 4],
            &format!("{good}="),
            &format!("{good}."),
            &format!("{good}.{good}"),
            &good.replacen('A', "+", 1),
        ] {
            assert_eq!(r.grants(bad.as_bytes()), Err(Invalid::Malformed), "{bad}");
        }
        // Vendor id 0 in a range list, a restriction range that runs backwards.
        let zero = core(
            2,
            &[1],
            &[],
            &ranges(9, &[(0, 0)]),
            &field(0, &[]),
            NO_RESTRICTIONS,
        );
        assert_eq!(r.grants(zero.as_bytes()), Err(Invalid::Malformed));
        let backwards = core(
            2,
            &[1],
            &[],
            &field(0, &[]),
            &field(0, &[]),
            &(n(1, 12) + &restriction(1, 0, &[(9, 2)])),
        );
        assert_eq!(r.grants(backwards.as_bytes()), Err(Invalid::Malformed));
        // A disclosed-vendors segment after the core is fine.
        let disclosed = format!("{good}.{}", encode(&("001".to_string() + &field(3, &[2]))));
        assert_eq!(r.grants(disclosed.as_bytes()), Ok(true));
    }

    #[test]
    fn purpose_names_follow_the_spec() {
        assert_eq!(
            purpose_name(1),
            Some("Store and/or access information on a device")
        );
        assert_eq!(purpose_name(11), Some("Use limited data to select content"));
        assert_eq!(purpose_name(0), None);
        assert_eq!(purpose_name(12), None);
    }
}
