//! Query-parameter name patterns for `url.keep_query`: `*` matches any run of
//! characters, `?` exactly one, everything else itself. Hand-written because
//! a general glob engine cost ~0.5 µs per URL on the hot path (measured in
//! examples/action_costs.rs), and this grammar needs no more.

/// A set of patterns; a name matches the set if it matches any pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Globs(Vec<Vec<char>>);

impl Globs {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Globs {
        Globs(
            patterns
                .iter()
                .map(|p| p.as_ref().chars().collect())
                .collect(),
        )
    }

    pub fn is_match(&self, name: &str) -> bool {
        self.0.iter().any(|p| matches(p, name))
    }
}

fn matches(pattern: &[char], name: &str) -> bool {
    // Parameter names are nearly always ASCII: match them without collecting.
    if name.is_ascii() {
        let name = name.as_bytes();
        return match_with(pattern, name.len(), |i| char::from(name[i]));
    }
    let name: Vec<char> = name.chars().collect();
    match_with(pattern, name.len(), |i| name[i])
}

/// Iterative matching with backtracking to the last `*`: linear for the
/// usual one-star patterns, never exponential.
#[inline]
fn match_with(pattern: &[char], len: usize, at: impl Fn(usize) -> char) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < len {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(c) if *c == '?' || *c == at(n) => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_semantics() {
        let g = |p: &str, n: &str| Globs::new(&[p]).is_match(n);
        assert!(g("utm_*", "utm_source") && g("utm_*", "utm_"));
        assert!(!g("utm_*", "xutm_source") && !g("utm_*", "utm"));
        assert!(g("*", "") && g("*", "anything"));
        assert!(g("a?c", "abc") && !g("a?c", "ac") && g("a?c", "aéc"));
        assert!(g("*_id", "user_id") && !g("*_id", "user_idx"));
        assert!(g("a*b*c", "axxbyyc") && !g("a*b*c", "axxbyy"));
        assert!(g("[x]", "[x]"));
        assert!(!Globs::new::<&str>(&[]).is_match("a"));
        assert!(Globs::new(&["q", "page"]).is_match("page"));
    }
}
