//! Which rules of a chain can stay: the longest common subsequence of the rules the kernel has
//! and the rules the plan wants, compared by fingerprint. Everything else is deleted or
//! inserted around them, so a repair or a policy edit touches only the rules that differ and
//! every other rule keeps its handle.

/// Pairs `(index in have, index in want)` of the rules kept, in increasing order of both.
pub fn keep<A: AsRef<str>, B: AsRef<str>>(have: &[A], want: &[B]) -> Vec<(usize, usize)> {
    let eq = |i: usize, j: usize| have[i].as_ref() == want[j].as_ref();
    // Common ends first: the usual difference is one rule added, removed or changed, and the
    // table below then stays tiny.
    let mut head = 0;
    while head < have.len() && head < want.len() && eq(head, head) {
        head += 1;
    }
    let mut tail = 0;
    while tail < have.len() - head
        && tail < want.len() - head
        && eq(have.len() - 1 - tail, want.len() - 1 - tail)
    {
        tail += 1;
    }
    let (n, m) = (have.len() - head - tail, want.len() - head - tail);
    // lcs[i][j]: length of the common subsequence of have[head+i..] and want[head+j..].
    let width = m + 1;
    let mut lcs = vec![0u32; (n + 1) * width];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i * width + j] = if eq(head + i, head + j) {
                lcs[(i + 1) * width + j + 1] + 1
            } else {
                lcs[(i + 1) * width + j].max(lcs[i * width + j + 1])
            };
        }
    }
    let mut out: Vec<(usize, usize)> = (0..head).map(|k| (k, k)).collect();
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if eq(head + i, head + j) {
            out.push((head + i, head + j));
            i += 1;
            j += 1;
        } else if lcs[(i + 1) * width + j] >= lcs[i * width + j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out.extend((0..tail).map(|k| (head + n + k, head + m + k)));
    out
}

#[cfg(test)]
mod tests {
    use super::keep;

    fn kept(have: &str, want: &str) -> String {
        let h: Vec<String> = have.chars().map(String::from).collect();
        let w: Vec<String> = want.chars().map(String::from).collect();
        keep(&h, &w).iter().map(|&(i, _)| &h[i][..]).collect()
    }

    #[test]
    fn keeps_the_longest_common_subsequence() {
        assert_eq!(kept("abcde", "abcde"), "abcde");
        assert_eq!(kept("abde", "abcde"), "abde", "one rule deleted");
        assert_eq!(kept("abXde", "abcde"), "abde", "one rule changed");
        assert_eq!(kept("", "abc"), "");
        assert_eq!(kept("abc", ""), "");
        assert_eq!(kept("xaybzc", "abc"), "abc");
        assert_eq!(kept("aab", "ab"), "ab");
        assert_eq!(kept("cab", "abc").len(), 2);
    }

    #[test]
    fn pairs_increase_in_both_sequences() {
        let h: Vec<&str> = "q a w b e c a".split(' ').collect();
        let w: Vec<&str> = "a b c a d".split(' ').collect();
        let pairs = keep(&h, &w);
        assert_eq!(pairs.len(), 4);
        for p in pairs.windows(2) {
            assert!(p[0].0 < p[1].0 && p[0].1 < p[1].1, "{pairs:?}");
        }
        for &(i, j) in &pairs {
            assert_eq!(h[i], w[j]);
        }
    }
}
