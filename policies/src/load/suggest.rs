//! "Did you mean": the closest allowed word to a misspelt one.

/// Words longer than this get no suggestion: the distance is quadratic and a long key is no typo.
const LONGEST_WORD: usize = 64;

/// The candidate closest to `word` (ignoring case), if it is close enough to be a likely typo:
/// at most one edit per three characters of the candidate, and at least one.
pub(super) fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    if word.chars().count() > LONGEST_WORD {
        return None;
    }
    let word: Vec<char> = word.to_lowercase().chars().collect();
    candidates
        .iter()
        .map(|candidate| {
            let lower: Vec<char> = candidate.to_lowercase().chars().collect();
            (distance(&word, &lower), lower.len(), *candidate)
        })
        .filter(|&(distance, length, _)| distance <= (length / 3).max(1))
        .min_by_key(|&(distance, _, _)| distance)
        .map(|(_, _, candidate)| candidate)
}

/// Edit distance counting insertions, deletions, substitutions and swaps of neighbours as one
/// edit each (optimal string alignment).
fn distance(a: &[char], b: &[char]) -> usize {
    let mut before_previous: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1).min(current[j - 1] + 1).min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before_previous[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before_previous, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[&str] = &["disabled", "mustChangePassword", "clearPasswordNeverExpires"];

    #[test]
    fn near_misses_are_suggested() {
        assert_eq!(closest("disable", FIELDS), Some("disabled"));
        assert_eq!(closest("disbaled", FIELDS), Some("disabled"));
        assert_eq!(closest("MustChangePassword", FIELDS), Some("mustChangePassword"));
        assert_eq!(closest("mustchangepasword", FIELDS), Some("mustChangePassword"));
        assert_eq!(closest("kidn", &["kind", "spec"]), Some("kind"));
    }

    #[test]
    fn far_words_are_not() {
        assert_eq!(closest("colour", FIELDS), None);
        assert_eq!(closest("a", &["spec"]), None);
        assert_eq!(closest(&"disabled".repeat(20), FIELDS), None);
    }

    #[test]
    fn distance_counts_edits() {
        let d = |a: &str, b: &str| distance(&a.chars().collect::<Vec<_>>(), &b.chars().collect::<Vec<_>>());
        assert_eq!(d("", "abc"), 3);
        assert_eq!(d("abc", "abc"), 0);
        assert_eq!(d("abc", "acb"), 1);
        assert_eq!(d("kitten", "sitting"), 3);
    }
}
