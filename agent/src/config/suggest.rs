//! "Did you mean ...?" for misspelt keys, enum values, profile and network names.

/// The closest candidate to `word`, if it is close enough to be a likely typo
/// (case differences, a transposition, one or two wrong letters).
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_lowercase();
    // Short words tolerate one edit, longer ones a third of their length (at most 3).
    let limit = (lower.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&lower, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `"did you mean `x`? "` when [`suggest`] finds a candidate, else empty: a message prefix.
pub fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    match suggest(word, candidates) {
        Some(s) => format!("did you mean `{s}`? "),
        None => String::new(),
    }
}

/// `one of a, b, c` (or `a` when there is a single choice).
pub fn one_of(names: &[&str]) -> String {
    match names {
        [one] => format!("`{one}`"),
        _ => format!("one of {}", names.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_are_suggested() {
        let keys = ["name", "action", "protocol", "ports", "from"];
        assert_eq!(suggest("protcol", &keys), Some("protocol"));
        assert_eq!(suggest("form", &keys), Some("from"));
        assert_eq!(suggest("PORTS", &keys), Some("ports"));
        assert_eq!(suggest("destination", &keys), None);
        assert_eq!(suggest("nft", &["nft", "xdp"]), Some("nft"));
    }
}
