//! Label sets, shared. A cluster has far fewer distinct label sets than
//! pods (the pods of a Deployment share theirs), and the agent holds a pod
//! both as its watcher converted it and in the model: as plain maps every
//! pod's labels cost about 700 bytes twice over. Here a copy is a
//! reference count, and [`Labels::interned`] makes equal sets one.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

/// A label set: a map from key to value, cheap to clone. Reads go through
/// `Deref` to the map; a write copies the set first when it is shared.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Arc<BTreeMap<String, String>>);

impl Labels {
    pub fn new() -> Labels {
        Labels::default()
    }

    /// The one shared copy of this set: equal sets converted anywhere in
    /// the process end up as one allocation.
    pub fn interned(self) -> Labels {
        SETS.lock().unwrap_or_else(|e| e.into_inner()).intern(self)
    }
}

static SETS: Mutex<Interner> = Mutex::new(Interner {
    sets: None,
    pruned_at: 0,
});

struct Interner {
    sets: Option<HashSet<Labels>>,
    /// Size after the last pruning.
    pruned_at: usize,
}

impl Interner {
    fn intern(&mut self, labels: Labels) -> Labels {
        let sets = self.sets.get_or_insert_with(HashSet::new);
        if let Some(known) = sets.get(&labels) {
            return known.clone();
        }
        sets.insert(labels.clone());
        // Sets nobody holds any more are dropped once the table has
        // doubled since the last look: amortized constant per call.
        if sets.len() > 2 * self.pruned_at + 1024 {
            sets.retain(|l| Arc::strong_count(&l.0) > 1);
            self.pruned_at = sets.len();
        }
        labels
    }
}

impl std::ops::Deref for Labels {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Labels {
    fn deref_mut(&mut self) -> &mut Self::Target {
        Arc::make_mut(&mut self.0)
    }
}

impl std::fmt::Debug for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Labels {
        Labels(Arc::new(map))
    }
}

impl<const N: usize> From<[(String, String); N]> for Labels {
    fn from(pairs: [(String, String); N]) -> Labels {
        Labels(Arc::new(BTreeMap::from(pairs)))
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Labels {
        Labels(Arc::new(iter.into_iter().collect()))
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl serde::Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(app: &str) -> Labels {
        Labels::from([("app".to_string(), app.to_string())])
    }

    #[test]
    fn equal_sets_intern_to_one_and_writes_copy() {
        let a = set("web").interned();
        let b = set("web").interned();
        assert!(Arc::ptr_eq(&a.0, &b.0));
        let mut c = b.clone();
        c.insert("tier".into(), "front".into());
        assert_eq!(a, b, "a write leaves the shared set alone");
        assert_eq!(c.len(), 2);
        assert!(!Arc::ptr_eq(&set("db").interned().0, &a.0));
    }

    #[test]
    fn sets_nobody_holds_are_pruned() {
        for i in 0..5000 {
            drop(set(&format!("gone-{i}")).interned());
        }
        let kept = set("kept-across-prunes").interned();
        for i in 0..5000 {
            drop(set(&format!("later-{i}")).interned());
        }
        let again = set("kept-across-prunes").interned();
        assert!(Arc::ptr_eq(&kept.0, &again.0));
        // 10,000 sets came and went; the table holds at most the last
        // doubling's worth (other tests intern a few of their own).
        let held = SETS.lock().unwrap().sets.as_ref().map_or(0, HashSet::len);
        assert!(held < 6000, "{held} sets held");
    }
}
