//! Range-based set reconciliation of version vectors (sync version 2,
//! docs/PROTOCOL.md "Reconciliation"), in the style of negentropy and
//! iroh-docs' ranger: the two sides compare fingerprints of ranges of the
//! author key space and split the ranges that differ, until the differing
//! authors are listed. The cost grows with the number of authors that
//! differ (and the logarithm of the number that exist), not with the number
//! that exist; each side reads its own heads one range at a time and never
//! holds its whole vector.
//!
//! The set is every author's advertised head (`Db::version_vector`): items
//! `(author, seq, hash)`, ordered by author. A range is `[lower, upper)` of
//! author keys; a message lists consecutive ranges that cover the whole key
//! space, each with what the sender says of it.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use peers_engine::{Author, ChangeHash, Db, Head};

use crate::error::{Error, Result};
use crate::message::VectorEntry;

/// A range that differs and holds at most this many heads is listed, not
/// fingerprinted.
pub const RECONCILE_ITEMS_MAX: usize = 16;
/// A part of a split is listed (not fingerprinted) when it holds at most
/// this many heads: a fingerprint is cheaper than a list, and most parts of
/// a split are equal.
pub const RECONCILE_SPLIT_ITEMS_MAX: usize = 1;
/// A range that differs and holds more items is split into this many.
pub const RECONCILE_SPLIT: usize = 16;
/// Most ranges one `Reconcile` message may carry.
pub const RECONCILE_RANGES_MAX: usize = 16_384;
/// A reply stops splitting ranges once it is this large (the ranges left
/// are answered with one fingerprint each, and split in a later round).
pub const RECONCILE_REPLY_BYTES: usize = 1024 * 1024;
/// Most messages one side answers in a reconciliation: far more than the
/// ~log16(authors) an honest peer needs.
pub const RECONCILE_ROUNDS_MAX: u32 = 128;
/// Most differing authors one reconciliation records.
pub const RECONCILE_DIFFERENCES_MAX: usize = 1 << 20;
/// blake3 `derive_key` context of an item's fingerprint value.
pub const ITEM_CONTEXT: &str = "peers 2026-12-02 reconcile item v3";
/// blake3 `derive_key` context of a range's fingerprint.
pub const RANGE_CONTEXT: &str = "peers 2026-12-02 reconcile range v3";

/// One range of a `Reconcile` message: it ends (exclusive) at `upper`
/// (`None`: the end of the key space) and starts where the previous one
/// ended (the first at the all-zero key).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Range {
    /// Exclusive upper bound, as a prefix of 1 to 32 bytes of an author
    /// key that stands for that prefix padded with zeros (a splitter sends
    /// the shortest prefix that separates two neighbours); `None` for the
    /// last range.
    pub upper: Option<Vec<u8>>,
    /// What the sender says of the range.
    pub kind: RangeKind,
}

/// What a side says of one range.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum RangeKind {
    /// Index 0: nothing (equal, or already settled).
    Skip,
    /// Index 1: the sender's fingerprint of the range (see [`fingerprint`]).
    Fingerprint([u8; 16]),
    /// Index 2: every head the sender holds in the range, in author order;
    /// the receiver answers with its own list when it differs.
    Items(Vec<VectorEntry>),
    /// Index 3: every head the sender holds in the range, as an answer:
    /// the receiver answers nothing.
    ItemsFinal(Vec<VectorEntry>),
}

/// Where a side reads its heads from: one range at a time, in author order.
pub trait Heads {
    /// Calls `visit` for each head with `from <= author < until` (`None`:
    /// no upper bound) in author order, until it returns false.
    fn scan(
        &self,
        from: &Author,
        until: Option<&Author>,
        visit: &mut dyn FnMut(Author, Head) -> bool,
    ) -> Result<()>;
}

impl Heads for Db {
    fn scan(
        &self,
        from: &Author,
        until: Option<&Author>,
        visit: &mut dyn FnMut(Author, Head) -> bool,
    ) -> Result<()> {
        Ok(self.heads_between(from, until, visit)?)
    }
}

/// A sorted list of heads (tests and benches).
impl Heads for Vec<(Author, Head)> {
    fn scan(
        &self,
        from: &Author,
        until: Option<&Author>,
        visit: &mut dyn FnMut(Author, Head) -> bool,
    ) -> Result<()> {
        let start = self.partition_point(|(author, _)| author < from);
        for (author, head) in &self[start..] {
            if until.is_some_and(|until| author >= until) || !visit(*author, *head) {
                break;
            }
        }
        Ok(())
    }
}

/// The sum (mod 2^128) and count of items' values: a range's fingerprint
/// before it is hashed. Adding is order-free, so ranges combine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sum {
    sum: u128,
    count: u64,
}

impl Sum {
    fn add(&mut self, author: &Author, head: &Head) {
        let mut hasher = blake3::Hasher::new_derive_key(ITEM_CONTEXT);
        hasher.update(&author.0);
        hasher.update(&head.seq.to_le_bytes());
        hasher.update(&head.hash.0);
        let mut value = [0u8; 16];
        value.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(value));
        self.count += 1;
    }

    fn fingerprint(&self) -> [u8; 16] {
        let mut hasher = blake3::Hasher::new_derive_key(RANGE_CONTEXT);
        hasher.update(&self.sum.to_le_bytes());
        hasher.update(&self.count.to_le_bytes());
        let mut fingerprint = [0u8; 16];
        fingerprint.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        fingerprint
    }
}

/// The fingerprint of a set of heads: `blake3::derive_key(RANGE_CONTEXT)`
/// over `sum (u128 LE) || count (u64 LE)`, first 16 bytes, where `sum` adds,
/// mod 2^128, each item's value: the first 16 bytes (as u128 LE) of
/// `blake3::derive_key(ITEM_CONTEXT)` over `author || seq (u64 LE) || hash`.
/// A sum, not an XOR, so a member cannot cheaply craft authors whose values
/// cancel (negentropy's choice).
pub fn fingerprint(heads: &[(Author, Head)]) -> [u8; 16] {
    let mut sum = Sum::default();
    for (author, head) in heads {
        sum.add(author, head);
    }
    sum.fingerprint()
}

/// One author whose heads differ between the two sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Difference {
    /// Our head (`None`: we hold none of its changes).
    pub ours: Option<Head>,
    /// The peer's head (`None`: it holds none).
    pub theirs: Option<Head>,
}

/// One side of a reconciliation.
pub struct Reconciler<H: Heads> {
    heads: H,
    differences: BTreeMap<Author, Difference>,
    rounds: u32,
}

impl<H: Heads> Reconciler<H> {
    /// A reconciliation over `heads`.
    pub fn new(heads: H) -> Self {
        Reconciler {
            heads,
            differences: BTreeMap::new(),
            rounds: 0,
        }
    }

    /// The first message, from the side that starts: one range over the
    /// whole key space (its list, when it is short).
    pub fn initiate(&mut self) -> Result<Vec<Range>> {
        let lower = Author([0; 32]);
        let (sum, items) = self.sum_and_items(&lower, None)?;
        let kind = match items {
            Some(items) => RangeKind::Items(items),
            None => RangeKind::Fingerprint(sum.fingerprint()),
        };
        Ok(vec![Range { upper: None, kind }])
    }

    /// Answers the peer's message. An empty answer means this side is done:
    /// it sends it, and the reconciliation is over once the peer reads it.
    /// An empty message from the peer needs no answer (the caller stops).
    pub fn respond(&mut self, incoming: &[Range]) -> Result<Vec<Range>> {
        self.rounds += 1;
        if self.rounds > RECONCILE_ROUNDS_MAX {
            return Err(malformed(format!(
                "reconciliation still going after {RECONCILE_ROUNDS_MAX} rounds"
            )));
        }
        validate(incoming)?;
        let mut out: Vec<Range> = Vec::new();
        let mut budget = RECONCILE_REPLY_BYTES;
        let mut lower = Author([0; 32]);
        for (index, range) in incoming.iter().enumerate() {
            // Room for a split: the ranges still to answer need one each.
            let ranges_left =
                RECONCILE_RANGES_MAX.saturating_sub(out.len() + (incoming.len() - index));
            let split_budget = if ranges_left >= RECONCILE_SPLIT {
                budget
            } else {
                0
            };
            let bound = range.upper.clone();
            let upper = range.upper.as_deref().map(padded);
            let answer = match &range.kind {
                RangeKind::Skip => vec![skip(bound)],
                RangeKind::Fingerprint(theirs) => {
                    let (sum, items) = self.sum_and_items(&lower, upper.as_ref())?;
                    if sum.fingerprint() == *theirs {
                        vec![skip(bound)]
                    } else if let Some(items) = items {
                        listed_or_fingerprint(bound, RangeKind::Items(items), sum, budget)
                    } else {
                        self.split_or_fingerprint(&lower, bound, sum, split_budget)?
                    }
                }
                RangeKind::Items(theirs) => {
                    let (sum, items) = self.sum_and_items(&lower, upper.as_ref())?;
                    let equal = self.record(&lower, upper.as_ref(), theirs)?;
                    if equal {
                        vec![skip(bound)]
                    } else if let Some(items) = items {
                        listed_or_fingerprint(bound, RangeKind::ItemsFinal(items), sum, budget)
                    } else {
                        // Too many of ours to list: the peer lists its side
                        // of each part, until ours fit.
                        self.split_or_fingerprint(&lower, bound, sum, split_budget)?
                    }
                }
                RangeKind::ItemsFinal(theirs) => {
                    self.record(&lower, upper.as_ref(), theirs)?;
                    vec![skip(bound)]
                }
            };
            for range in answer {
                budget = budget.saturating_sub(encoded_bytes(&range));
                push_merged(&mut out, range);
            }
            if let Some(upper) = upper {
                lower = upper;
            }
        }
        // An all-skip answer says nothing: it is empty.
        if out.iter().all(|range| range.kind == RangeKind::Skip) {
            out.clear();
        }
        Ok(out)
    }

    /// The authors found to differ, with both sides' heads.
    pub fn differences(&self) -> &BTreeMap<Author, Difference> {
        &self.differences
    }

    /// Consumes the reconciler: the differences.
    pub fn into_differences(self) -> BTreeMap<Author, Difference> {
        self.differences
    }

    /// Our sum over `[lower, upper)`, and our items there when they are at
    /// most [`RECONCILE_ITEMS_MAX`].
    fn sum_and_items(
        &self,
        lower: &Author,
        upper: Option<&Author>,
    ) -> Result<(Sum, Option<Vec<VectorEntry>>)> {
        let mut sum = Sum::default();
        let mut items = Vec::new();
        self.heads.scan(lower, upper, &mut |author, head| {
            sum.add(&author, &head);
            if items.len() <= RECONCILE_ITEMS_MAX {
                items.push(entry(author, head));
            }
            true
        })?;
        let listed = (items.len() <= RECONCILE_ITEMS_MAX).then_some(items);
        Ok((sum, listed))
    }

    /// Splits our `[lower, upper)` (which holds more than
    /// [`RECONCILE_ITEMS_MAX`] items, summing to `whole`) into
    /// [`RECONCILE_SPLIT`] parts of equal counts, each listed or
    /// fingerprinted; or, when the reply has no `budget` (bytes) left for a
    /// split, answers with our fingerprint of the whole range (the peer
    /// splits it instead).
    fn split_or_fingerprint(
        &self,
        lower: &Author,
        bound: Option<Vec<u8>>,
        whole: Sum,
        budget: usize,
    ) -> Result<Vec<Range>> {
        let upper = bound.as_deref().map(padded);
        // A split costs at most this much.
        let split_bytes = RECONCILE_SPLIT * (36 + 17 + RECONCILE_SPLIT_ITEMS_MAX * 75);
        if budget < split_bytes {
            return Ok(vec![Range {
                upper: bound,
                kind: RangeKind::Fingerprint(whole.fingerprint()),
            }]);
        }
        let per_part = usize::try_from(whole.count)
            .unwrap_or(usize::MAX)
            .div_ceil(RECONCILE_SPLIT)
            .max(1);
        let mut parts: Vec<(Sum, Vec<VectorEntry>, Option<Vec<u8>>)> = Vec::new();
        let mut current = (Sum::default(), Vec::new());
        let mut previous: Option<Author> = None;
        self.heads
            .scan(lower, upper.as_ref(), &mut |author, head| {
                if current.0.count as usize == per_part
                    && let Some(previous) = previous
                {
                    let done = std::mem::take(&mut current);
                    parts.push((done.0, done.1, Some(separator(&previous, &author))));
                }
                current.0.add(&author, &head);
                if current.1.len() <= RECONCILE_SPLIT_ITEMS_MAX {
                    current.1.push(entry(author, head));
                }
                previous = Some(author);
                true
            })?;
        parts.push((current.0, current.1, bound));
        Ok(parts
            .into_iter()
            .map(|(sum, items, upper)| Range {
                upper,
                kind: if items.len() <= RECONCILE_SPLIT_ITEMS_MAX {
                    RangeKind::Items(items)
                } else {
                    RangeKind::Fingerprint(sum.fingerprint())
                },
            })
            .collect())
    }

    /// Records the peer's complete list `theirs` for `[lower, upper)`
    /// against ours; returns whether the two are equal.
    fn record(
        &mut self,
        lower: &Author,
        upper: Option<&Author>,
        theirs: &[VectorEntry],
    ) -> Result<bool> {
        let mut next = 0;
        let mut found: Vec<(Author, Difference)> = Vec::new();
        // Merge our stream with their (short) list.
        self.heads.scan(lower, upper, &mut |author, head| {
            while let Some(their) = theirs.get(next)
                && their.author < author.0
            {
                found.push((
                    Author(their.author),
                    Difference {
                        ours: None,
                        theirs: Some(head_of(their)),
                    },
                ));
                next += 1;
            }
            match theirs.get(next) {
                Some(their) if their.author == author.0 => {
                    if head_of(their) != head {
                        found.push((
                            author,
                            Difference {
                                ours: Some(head),
                                theirs: Some(head_of(their)),
                            },
                        ));
                    }
                    next += 1;
                }
                _ => found.push((
                    author,
                    Difference {
                        ours: Some(head),
                        theirs: None,
                    },
                )),
            }
            true
        })?;
        for their in &theirs[next..] {
            found.push((
                Author(their.author),
                Difference {
                    ours: None,
                    theirs: Some(head_of(their)),
                },
            ));
        }
        let equal = found.is_empty();
        for (author, difference) in found {
            if self.differences.len() >= RECONCILE_DIFFERENCES_MAX
                && !self.differences.contains_key(&author)
            {
                return Err(malformed(format!(
                    "more than {RECONCILE_DIFFERENCES_MAX} authors differ"
                )));
            }
            self.differences.insert(author, difference);
        }
        Ok(equal)
    }
}

/// Checks a message's shape: at most [`RECONCILE_RANGES_MAX`] ranges with
/// strictly increasing bounds, the last unbounded; lists of at most
/// [`RECONCILE_ITEMS_MAX`] heads, in strictly increasing author order,
/// inside their range.
pub fn validate(ranges: &[Range]) -> Result<()> {
    if ranges.len() > RECONCILE_RANGES_MAX {
        return Err(malformed(format!("{} ranges", ranges.len())));
    }
    let Some(last) = ranges.last() else {
        return Ok(());
    };
    if last.upper.is_some() {
        return Err(malformed("the last range is bounded".to_owned()));
    }
    let mut lower: Option<Author> = None;
    for range in ranges {
        let upper = match range.upper.as_deref() {
            Some(prefix) if prefix.is_empty() || prefix.len() > 32 => {
                return Err(malformed(format!("a bound of {} bytes", prefix.len())));
            }
            Some(prefix) => Some(padded(prefix)),
            None => None,
        };
        if let (Some(lower), Some(upper)) = (lower, upper)
            && upper <= lower
        {
            return Err(malformed("range bounds out of order".to_owned()));
        }
        if let RangeKind::Items(items) | RangeKind::ItemsFinal(items) = &range.kind {
            if items.len() > RECONCILE_ITEMS_MAX {
                return Err(malformed(format!("a list of {} heads", items.len())));
            }
            let outside = items.iter().any(|item| {
                lower.is_some_and(|lower| Author(item.author) < lower)
                    || upper.is_some_and(|upper| Author(item.author) >= upper)
            });
            if outside {
                return Err(malformed("a listed head outside its range".to_owned()));
            }
            if items
                .windows(2)
                .any(|pair| pair[0].author >= pair[1].author)
            {
                return Err(malformed("listed heads out of order".to_owned()));
            }
        }
        if upper.is_some() {
            lower = upper;
        }
    }
    Ok(())
}

/// The author key a bound's prefix stands for: padded with zeros.
fn padded(prefix: &[u8]) -> Author {
    let mut key = [0u8; 32];
    let length = prefix.len().min(32);
    key[..length].copy_from_slice(&prefix[..length]);
    Author(key)
}

/// The shortest prefix of `next` that, padded with zeros, is above
/// `previous` (so it separates the two: `previous < bound <= next`).
fn separator(previous: &Author, next: &Author) -> Vec<u8> {
    (1..=32)
        .map(|length| next.0[..length].to_vec())
        .find(|prefix| padded(prefix) > *previous)
        .unwrap_or_else(|| next.0.to_vec())
}

/// A list for a range, or, when the reply has no room left for it, our
/// fingerprint of the range: the peer, whose fingerprint differs, lists its
/// side in the next round and we list ours then.
fn listed_or_fingerprint(
    upper: Option<Vec<u8>>,
    listed: RangeKind,
    sum: Sum,
    budget: usize,
) -> Vec<Range> {
    let range = Range {
        upper,
        kind: listed,
    };
    if encoded_bytes(&range) <= budget {
        return vec![range];
    }
    vec![Range {
        upper: range.upper,
        kind: RangeKind::Fingerprint(sum.fingerprint()),
    }]
}

fn skip(upper: Option<Vec<u8>>) -> Range {
    Range {
        upper,
        kind: RangeKind::Skip,
    }
}

/// Appends `range`, merging it into a previous skip.
fn push_merged(out: &mut Vec<Range>, range: Range) {
    if range.kind == RangeKind::Skip
        && let Some(last) = out.last_mut()
        && last.kind == RangeKind::Skip
    {
        last.upper = range.upper;
        return;
    }
    out.push(range);
}

/// An upper estimate of a range's encoded size.
fn encoded_bytes(range: &Range) -> usize {
    2 + range.upper.as_ref().map_or(0, Vec::len)
        + match &range.kind {
            RangeKind::Skip => 1,
            RangeKind::Fingerprint(_) => 17,
            RangeKind::Items(items) | RangeKind::ItemsFinal(items) => 3 + items.len() * 75,
        }
}

fn entry(author: Author, head: Head) -> VectorEntry {
    VectorEntry {
        author: author.0,
        seq: head.seq,
        hash: head.hash.0,
    }
}

fn head_of(entry: &VectorEntry) -> Head {
    Head {
        seq: entry.seq,
        hash: ChangeHash(entry.hash),
    }
}

fn malformed(reason: String) -> Error {
    Error::MalformedMessage { bytes: 0, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Set = Vec<(Author, Head)>;

    fn head(seed: u64) -> Head {
        let mut hash = [0u8; 32];
        hash[..8].copy_from_slice(&seed.to_le_bytes());
        Head {
            seq: seed % 1000 + 1,
            hash: ChangeHash(hash),
        }
    }

    fn author(index: u64) -> Author {
        Author(*blake3::hash(&index.to_le_bytes()).as_bytes())
    }

    /// Runs a reconciliation between two sorted sets; returns both sides'
    /// differences and the number of messages.
    fn run(
        a: &[(Author, Head)],
        b: &[(Author, Head)],
    ) -> (
        BTreeMap<Author, Difference>,
        BTreeMap<Author, Difference>,
        usize,
    ) {
        let mut left = Reconciler::new(a.to_vec());
        let mut right = Reconciler::new(b.to_vec());
        let mut message = left.initiate().expect("initiate");
        let mut messages = 1;
        let mut turn_right = true;
        loop {
            let side = if turn_right { &mut right } else { &mut left };
            let reply = side.respond(&message).expect("respond");
            messages += 1;
            if reply.is_empty() {
                break;
            }
            message = reply;
            turn_right = !turn_right;
        }
        (left.into_differences(), right.into_differences(), messages)
    }

    fn set(range: std::ops::Range<u64>) -> Vec<(Author, Head)> {
        let mut heads: Vec<(Author, Head)> =
            range.map(|index| (author(index), head(index))).collect();
        heads.sort_by_key(|(author, _)| *author);
        heads
    }

    /// What each side must find: every author whose heads differ, with
    /// both heads, seen from its own side.
    fn expected(
        ours: &[(Author, Head)],
        theirs: &[(Author, Head)],
    ) -> BTreeMap<Author, Difference> {
        let ours: BTreeMap<_, _> = ours.iter().copied().collect();
        let theirs: BTreeMap<_, _> = theirs.iter().copied().collect();
        ours.keys()
            .chain(theirs.keys())
            .filter(|author| ours.get(author) != theirs.get(author))
            .map(|author| {
                (
                    *author,
                    Difference {
                        ours: ours.get(author).copied(),
                        theirs: theirs.get(author).copied(),
                    },
                )
            })
            .collect()
    }

    /// Fingerprint vectors computed with the Python `blake3` package from
    /// the bytes PROTOCOL.md lists.
    #[test]
    fn fingerprint_vectors() {
        let one = (
            Author([1; 32]),
            Head {
                seq: 300,
                hash: ChangeHash([2; 32]),
            },
        );
        let two = (
            Author([3; 32]),
            Head {
                seq: 1,
                hash: ChangeHash([4; 32]),
            },
        );
        assert_eq!(
            hex::encode(fingerprint(&[])),
            "2839344dbc510f960380963bf54f6df9"
        );
        assert_eq!(
            hex::encode(fingerprint(&[one])),
            "cc7c07d3412052fda526150bc6ac116f"
        );
        assert_eq!(
            hex::encode(fingerprint(&[one, two])),
            "18fc47a9d8e01d77c4ba3df55b18923c"
        );
        // Order-free: a sum.
        assert_eq!(fingerprint(&[two, one]), fingerprint(&[one, two]));
    }

    /// A peer that keeps a reconciliation going (here: the same mismatching
    /// fingerprint over and over) is refused after RECONCILE_ROUNDS_MAX
    /// answers: each answer costs a scan of the ranges it names.
    #[test]
    fn endless_reconciliation_is_refused() {
        let mut side = Reconciler::new(set(0..100));
        let nagging = [Range {
            upper: None,
            kind: RangeKind::Fingerprint([0xAB; 16]),
        }];
        for _ in 0..RECONCILE_ROUNDS_MAX {
            assert!(!side.respond(&nagging).expect("answers").is_empty());
        }
        assert!(matches!(
            side.respond(&nagging),
            Err(Error::MalformedMessage { .. })
        ));
    }

    #[test]
    fn equal_sets_finish_at_once() {
        let heads = set(0..5000);
        let (left, right, messages) = run(&heads, &heads);
        assert!(left.is_empty() && right.is_empty());
        assert_eq!(messages, 2);
    }

    /// Sets that differ in authors present on one side only, in heads of
    /// shared authors, both, or that are empty: both sides find exactly the
    /// differences, in a few messages.
    #[test]
    fn differences_are_found_exactly() {
        let base = set(0..3000);
        let mut cases: Vec<(Set, Set)> = Vec::new();
        cases.push((base.clone(), set(0..3001)));
        cases.push((set(0..10), set(0..0)));
        cases.push((set(0..0), set(0..100)));
        let mut moved = base.clone();
        for index in [5, 500, 2999] {
            moved[index].1.seq += 1;
        }
        cases.push((base.clone(), moved.clone()));
        let mut many = base.clone();
        for entry in many.iter_mut().step_by(7) {
            entry.1.hash.0[31] ^= 1;
        }
        many.extend(set(10_000..10_300));
        many.sort_by_key(|(author, _)| *author);
        cases.push((base.clone(), many));
        for (a, b) in cases {
            let (left, right, messages) = run(&a, &b);
            assert_eq!(left, expected(&a, &b));
            assert_eq!(right, expected(&b, &a));
            assert!(messages <= 12, "{messages} messages");
        }
    }

    /// Hostile shapes are refused: too many ranges or heads, bounds out of
    /// order, a bounded last range, heads outside their range or unsorted.
    #[test]
    fn malformed_messages_are_refused() {
        let item = |byte: u8| VectorEntry {
            author: [byte; 32],
            seq: 1,
            hash: [0; 32],
        };
        let cases = vec![
            vec![Range {
                upper: Some(vec![1; 32]),
                kind: RangeKind::Skip,
            }],
            vec![
                Range {
                    upper: Some(vec![5; 32]),
                    kind: RangeKind::Skip,
                },
                Range {
                    upper: Some(vec![4; 32]),
                    kind: RangeKind::Skip,
                },
                Range {
                    upper: None,
                    kind: RangeKind::Skip,
                },
            ],
            vec![Range {
                upper: None,
                kind: RangeKind::Items((0..33).map(item).collect()),
            }],
            vec![Range {
                upper: None,
                kind: RangeKind::Items(vec![item(3), item(2)]),
            }],
            vec![
                Range {
                    upper: Some(vec![5; 32]),
                    kind: RangeKind::Items(vec![item(6)]),
                },
                Range {
                    upper: None,
                    kind: RangeKind::Skip,
                },
            ],
            vec![
                Range {
                    upper: Some(vec![5; 32]),
                    kind: RangeKind::Skip,
                },
                Range {
                    upper: None,
                    kind: RangeKind::ItemsFinal(vec![item(4)]),
                },
            ],
            (0..=RECONCILE_RANGES_MAX)
                .map(|_| Range {
                    upper: None,
                    kind: RangeKind::Skip,
                })
                .collect(),
        ];
        for case in cases {
            assert!(validate(&case).is_err(), "{:?}", &case[..case.len().min(3)]);
        }
        assert!(validate(&[]).is_ok());
    }
}
