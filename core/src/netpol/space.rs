//! Label spaces: what combinations of label selectors one object can meet at once.
//!
//! A selector only tells apart the values it names, so every label set behaves like one built
//! from, per key, "absent", one of the values some selector names, or one value none names (a
//! fresh one). Walking those choices key by key visits every distinct way objects can be
//! selected, without knowing any object. The walk is memoised on what is still possible and
//! bounded by a budget: past it the caller gets [`Stop::TooComplex`] and fails closed.
//!
//! The walk is internal to [`crate::netpol`]; what callers see is the [`Budget`] it spends (at
//! most [`BUDGET`] steps) and the [`Stop`] it may end with.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use super::model::{Labels, requirement_holds};
use crate::matcher::{Operator, Requirement};

/// States already walked: a fast hash, the keys are ours.
type Seen = HashSet<(usize, Bits), foldhash::fast::FixedState>;

/// A value no selector names (label values cannot hold control characters).
pub(crate) const FRESH: &str = "\u{1}other";

/// How many steps (states of a walk, pieces of an address sweep) one judgement may take.
pub const BUDGET: usize = 200_000;

/// Why a judgement stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// It would take more than [`BUDGET`] steps.
    TooComplex,
    /// Its deadline passed.
    OutOfTime,
}

/// Steps left, and the time by which the judgement must end.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    steps: usize,
    deadline: Option<Instant>,
}

impl Budget {
    /// A full budget of [`BUDGET`] steps, ending at `deadline` if one is given.
    pub fn new(deadline: Option<Instant>) -> Self {
        Self {
            steps: BUDGET,
            deadline,
        }
    }

    /// Takes `n` steps; the clock is read every 1,024 steps or so.
    pub(crate) fn spend(&mut self, n: usize) -> Result<(), Stop> {
        let before = self.steps;
        self.steps = self.steps.checked_sub(n).ok_or(Stop::TooComplex)?;
        if before / 1024 != self.steps / 1024 && self.deadline.is_some_and(|d| Instant::now() >= d)
        {
            return Err(Stop::OutOfTime);
        }
        Ok(())
    }
}

/// A set of item indexes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Bits(Vec<u64>);

impl Bits {
    pub(crate) fn full(n: usize) -> Self {
        let mut words = vec![u64::MAX; n.div_ceil(64)];
        if !n.is_multiple_of(64)
            && let Some(last) = words.last_mut()
        {
            *last = (1u64 << (n % 64)) - 1;
        }
        Bits(words)
    }

    pub(crate) fn count(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    pub(crate) fn has(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub(crate) fn empty(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    /// These, less `other`'s.
    fn without(&self, other: &Bits) -> Bits {
        Bits(self.0.iter().zip(&other.0).map(|(a, b)| a & !b).collect())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, bits)| {
            (0..64)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| w * 64 + b)
        })
    }

    pub(crate) fn is_subset(&self, other: &Bits) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }
}

/// Items (conjunctions of requirements) over one label space.
pub(crate) struct Space {
    keys: Vec<String>,
    /// Per key, the values an object may have there (`None`: the label is absent).
    options: Vec<Vec<Option<String>>>,
    /// Per key and option, the items that option rules out.
    fails: Vec<Vec<Bits>>,
    items: usize,
}

/// What a key may hold, when not absent, any named value or a fresh one.
pub(crate) enum Domain {
    /// Exactly these (e.g. the allowed values of a label every namespace must carry).
    Only(Vec<Option<String>>),
}

impl Space {
    /// `items[i]` holds when all its requirements hold; `must` must hold for every object
    /// considered; `domain` restricts keys (others may be absent, any named value or a fresh
    /// one).
    pub(crate) fn new<I: AsRef<[Requirement]>>(
        items: &[I],
        must: &[Requirement],
        domain: &BTreeMap<String, Domain>,
        budget: &mut Budget,
    ) -> Result<Self, Stop> {
        let mut named: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut uses: BTreeMap<&str, usize> = BTreeMap::new();
        for r in items.iter().flat_map(AsRef::as_ref).chain(must) {
            let values = named.entry(&r.key).or_default();
            values.extend(r.values.iter().map(String::as_str));
            *uses.entry(&r.key).or_default() += 1;
        }
        for k in domain.keys() {
            named.entry(k).or_default();
        }
        // Keys most items depend on first: the walk splits where it matters.
        let mut keys: Vec<&str> = named.keys().copied().collect();
        keys.sort_by_key(|k| std::cmp::Reverse(uses.get(k).copied().unwrap_or(0)));
        let index: BTreeMap<&str, usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        let options: Vec<Vec<Option<String>>> = keys
            .iter()
            .map(|k| {
                let mut opts: Vec<Option<String>> = match domain.get(*k) {
                    Some(Domain::Only(v)) => v.clone(),
                    None => {
                        let mut values: Vec<&str> = named[k].clone();
                        values.sort_unstable();
                        values.dedup();
                        std::iter::once(None)
                            .chain(values.into_iter().map(|v| Some(v.to_owned())))
                            .chain(std::iter::once(Some(FRESH.to_owned())))
                            .collect()
                    }
                };
                opts.retain(|o| {
                    must.iter()
                        .filter(|r| r.key == *k)
                        .all(|r| requirement_holds(r, o.as_deref()))
                });
                opts
            })
            .collect();
        let mut fails: Vec<Vec<Bits>> = options
            .iter()
            .map(|opts| vec![Bits::empty(items.len()); opts.len()])
            .collect();
        // Where each option sits, by value (`None`: absent): a map for keys with many values,
        // a scan for the rest (most keys have a handful).
        type Map<'v> =
            std::collections::HashMap<Option<&'v str>, usize, foldhash::fast::FixedState>;
        let maps: Vec<Option<Map<'_>>> = options
            .iter()
            .map(|opts| {
                (opts.len() > 16).then(|| {
                    opts.iter()
                        .enumerate()
                        .map(|(o, v)| (v.as_deref(), o))
                        .collect()
                })
            })
            .collect();
        let position = |k: usize, value: Option<&str>| -> Option<usize> {
            match &maps[k] {
                Some(map) => map.get(&value).copied(),
                None => options[k].iter().position(|o| o.as_deref() == value),
            }
        };
        for (i, item) in items.iter().enumerate() {
            for r in item.as_ref() {
                let Some(&k) = index.get(r.key.as_str()) else {
                    continue;
                };
                // In and DoesNotExist mark every other option (one bit each, a sixteenth of a
                // step); NotIn and Exists only theirs.
                budget.spend(match r.operator {
                    Operator::In | Operator::DoesNotExist => {
                        options[k].len() / 16 + r.values.len() + 1
                    }
                    Operator::NotIn | Operator::Exists => r.values.len() + 1,
                })?;
                let named = || {
                    r.values
                        .iter()
                        .filter_map(|v| position(k, Some(v.as_str())))
                };
                let absent = position(k, None);
                match r.operator {
                    // Fails everywhere but on its values.
                    Operator::In => {
                        let keep: Vec<usize> = named().collect();
                        for o in (0..options[k].len()).filter(|o| !keep.contains(o)) {
                            fails[k][o].set(i);
                        }
                    }
                    // Fails on its values only.
                    Operator::NotIn => {
                        for o in named() {
                            fails[k][o].set(i);
                        }
                    }
                    Operator::Exists => {
                        if let Some(o) = absent {
                            fails[k][o].set(i);
                        }
                    }
                    Operator::DoesNotExist => {
                        for o in (0..options[k].len()).filter(|o| Some(*o) != absent) {
                            fails[k][o].set(i);
                        }
                    }
                }
            }
        }
        // Options that rule out the same items are one option: keep the first of each.
        drop(maps);
        let mut options = options;
        for (opts, fails) in options.iter_mut().zip(fails.iter_mut()) {
            if opts.len() <= 2 {
                continue;
            }
            let mut seen: HashSet<&Bits, foldhash::fast::FixedState> = HashSet::default();
            let keep: Vec<bool> = fails.iter().map(|f| seen.insert(f)).collect();
            let mut n = 0;
            opts.retain(|_| {
                n += 1;
                keep[n - 1]
            });
            let mut n = 0;
            fails.retain(|_| {
                n += 1;
                keep[n - 1]
            });
        }
        Ok(Self {
            keys: keys.into_iter().map(str::to_owned).collect(),
            options,
            fails,
            items: items.len(),
        })
    }

    /// Walks every distinct state: `visit(alive, labels)` is called at each node, with
    /// `labels` only at the leaves (one full label set, with the fresh value as [`FRESH`]);
    /// returning false at an inner node skips what lies under it.
    pub(crate) fn walk(
        &self,
        budget: &mut Budget,
        visit: &mut dyn FnMut(&Bits, Option<&Labels>) -> bool,
    ) -> Result<(), Stop> {
        if self.options.iter().any(Vec::is_empty) {
            return Ok(()); // `must` cannot be met: no object
        }
        let mut seen: Seen = HashSet::default();
        let mut choice: Vec<usize> = vec![0; self.keys.len()];
        self.step(
            0,
            Bits::full(self.items),
            &mut choice,
            &mut seen,
            budget,
            visit,
        )
    }

    fn step(
        &self,
        depth: usize,
        alive: Bits,
        choice: &mut Vec<usize>,
        seen: &mut Seen,
        budget: &mut Budget,
        visit: &mut dyn FnMut(&Bits, Option<&Labels>) -> bool,
    ) -> Result<(), Stop> {
        budget.spend(1)?;
        if depth == self.keys.len() {
            let labels: Labels = self
                .keys
                .iter()
                .zip(choice.iter())
                .zip(&self.options)
                .filter_map(|((k, &c), opts)| Some((k.clone(), opts[c].clone()?)))
                .collect();
            visit(&alive, Some(&labels));
            return Ok(());
        }
        if !visit(&alive, None) {
            return Ok(());
        }
        // Each option costs a pass over the items.
        budget.spend(self.fails[depth].len())?;
        for (c, fails) in self.fails[depth].iter().enumerate() {
            let next = alive.without(fails);
            // Past this key, only what is alive matters: a state seen before adds nothing.
            if !seen.insert((depth + 1, next.clone())) {
                continue;
            }
            choice[depth] = c;
            self.step(depth + 1, next, choice, seen, budget, visit)?;
        }
        Ok(())
    }

    /// The distinct sets of items that some object meets, each with one such object's labels.
    pub(crate) fn combinations(&self, budget: &mut Budget) -> Result<Vec<(Bits, Labels)>, Stop> {
        let mut out: BTreeMap<Bits, Labels> = BTreeMap::new();
        self.walk(budget, &mut |alive, labels| {
            if let Some(labels) = labels {
                out.entry(alive.clone()).or_insert_with(|| labels.clone());
            }
            true
        })?;
        Ok(out.into_iter().collect())
    }
}

/// Whether some label set meets every requirement of `reqs`.
pub(crate) fn satisfiable(reqs: &[Requirement]) -> bool {
    let Ok(space) =
        Space::new::<Vec<Requirement>>(&[], reqs, &BTreeMap::new(), &mut Budget::new(None))
    else {
        return true;
    };
    !space.options.iter().any(Vec::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::Operator;

    fn req(key: &str, op: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            operator: op,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    #[test]
    fn combinations_are_the_ways_objects_can_be_selected() {
        use Operator::*;
        let items = vec![
            vec![],                         // every object
            vec![req("app", In, &["a"])],   // app=a
            vec![req("app", In, &["b"])],   // app=b
            vec![req("tier", Exists, &[])], // tier
        ];
        let space = Space::new(&items, &[], &BTreeMap::new(), &mut Budget::new(None)).unwrap();
        let combos = space.combinations(&mut Budget::new(None)).unwrap();
        let sets: Vec<Vec<usize>> = combos.iter().map(|(b, _)| b.iter().collect()).collect();
        // app: absent/a/b/other x tier: absent/present, and app=a,b never together.
        assert_eq!(sets.len(), 6, "{sets:?}");
        assert!(!sets.iter().any(|s| s.contains(&1) && s.contains(&2)));
        for (bits, labels) in &combos {
            for (i, item) in items.iter().enumerate() {
                let holds = item
                    .iter()
                    .all(|r| requirement_holds(r, labels.get(&r.key).map(String::as_str)));
                assert_eq!(holds, bits.has(i), "{labels:?}");
            }
        }
    }

    #[test]
    fn must_restricts_the_objects() {
        use Operator::*;
        let items = vec![
            vec![req("app", In, &["a"])],
            vec![req("app", NotIn, &["a"])],
        ];
        let space = Space::new(
            &items,
            &[req("app", In, &["a"])],
            &BTreeMap::new(),
            &mut Budget::new(None),
        )
        .unwrap();
        let combos = space.combinations(&mut Budget::new(None)).unwrap();
        assert_eq!(combos.len(), 1);
        assert_eq!(combos[0].0.iter().collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn unsatisfiable_selectors_are_recognised() {
        use Operator::*;
        assert!(!satisfiable(&[
            req("a", In, &["x"]),
            req("a", DoesNotExist, &[])
        ]));
        assert!(!satisfiable(&[
            req("a", In, &["x"]),
            req("a", NotIn, &["x"])
        ]));
        assert!(satisfiable(&[
            req("a", NotIn, &["x"]),
            req("a", Exists, &[])
        ]));
    }

    #[test]
    fn a_walk_past_the_budget_says_so() {
        use Operator::*;
        let items: Vec<Vec<Requirement>> = (0..40)
            .map(|i| vec![req(&format!("k{i}"), Exists, &[])])
            .collect();
        let space = Space::new(&items, &[], &BTreeMap::new(), &mut Budget::new(None)).unwrap();
        let mut budget = Budget::new(None);
        budget.steps = 1000;
        assert_eq!(space.combinations(&mut budget), Err(Stop::TooComplex));
        let mut budget = Budget::new(Some(Instant::now()));
        assert_eq!(space.combinations(&mut budget), Err(Stop::OutOfTime));
    }
}
