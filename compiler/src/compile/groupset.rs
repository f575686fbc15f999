//! Sets of rule groups. Word 0 holds the groups that own a bit in the maps
//! (indices below `RULE_BITS`); the further words are the spilled groups.

/// A set of group indices, trimmed so that equal sets compare equal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupSet(Vec<u64>);

impl GroupSet {
    pub fn insert(&mut self, group: usize) {
        let w = group / 64;
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << (group % 64);
    }

    pub fn remove(&mut self, group: usize) {
        let w = group / 64;
        if let Some(word) = self.0.get_mut(w) {
            *word &= !(1 << (group % 64));
        }
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The groups that own a bit (`RULE_BITS` == 64).
    pub fn bits(&self) -> u64 {
        self.0.first().copied().unwrap_or(0)
    }

    /// Only the spilled groups (indices >= 64), or an empty set.
    pub fn spilled(&self) -> GroupSet {
        if self.0.len() <= 1 {
            return GroupSet::default();
        }
        let mut words = self.0.clone();
        words[0] = 0;
        GroupSet(words)
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            (0..64)
                .filter(move |b| word & (1 << b) != 0)
                .map(move |b| w * 64 + b)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_spilled_parts() {
        let mut s = GroupSet::default();
        s.insert(3);
        s.insert(70);
        assert_eq!(s.bits(), 1 << 3);
        assert_eq!(s.spilled().iter().collect::<Vec<_>>(), vec![70]);
        s.remove(70);
        assert!(s.spilled().is_empty());
        assert_eq!(s, {
            let mut t = GroupSet::default();
            t.insert(3);
            t
        });
    }
}
