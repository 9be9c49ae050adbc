//! Pure splitting arithmetic: chunk rounding, static splits, HGuided chunk sizes
//! and the transfer-aware balance solver.
//!
//! Nothing here touches a device, a clock or a lock: every function maps numbers
//! to numbers, so the properties the scheduler relies on (every item covered
//! exactly once, chunks rounded to the work-group multiple, HGuided chunks
//! shrinking) are checked by the property tests at the bottom of this file.

use std::ops::Range;

/// Round a wanted chunk of `want` items to a multiple of `multiple`, given that
/// `remaining` items are left.
///
/// * At least one multiple is taken (a chunk is never empty while items remain).
/// * When the rounded chunk would reach or pass the end, the chunk is the whole
///   remainder: only the last chunk of the index space may be ragged.
pub fn round_chunk(want: usize, remaining: usize, multiple: usize) -> usize {
    let m = multiple.max(1);
    if want >= remaining {
        return remaining;
    }
    let r = ((want / m) * m).max(m);
    if r >= remaining { remaining } else { r }
}

/// The HGuided chunk (EngineCL): `max(min_chunk, remaining × share / k)`, rounded
/// to `multiple` by [`round_chunk`]. `share` is the device's fraction of the
/// total throughput (0..=1); `k ≥ 1` controls how fast chunks shrink.
pub fn hguided_chunk(remaining: usize, share: f64, k: f64, min_chunk: usize, multiple: usize) -> usize {
    if remaining == 0 {
        return 0;
    }
    let share = if share.is_finite() { share.clamp(0.0, 1.0) } else { 1.0 };
    let k = if k.is_finite() && k >= 1.0 { k } else { 1.0 };
    let guided = (remaining as f64 * share / k).ceil();
    let guided = if guided >= remaining as f64 {
        remaining
    } else {
        guided as usize
    };
    round_chunk(guided.max(min_chunk), remaining, multiple)
}

/// The most chunks HGuided hands out from one run's index space (the devices'
/// two probe chunks and retried chunks aside): see [`chunk_floor`].
pub const MAX_GUIDED_CHUNKS: usize = 256;

/// The chunk floor of a run of `total` items on a device with work-group
/// multiple `multiple`: HGuided never hands out a smaller chunk except the final
/// remainder. It is at least one multiple and at least `total /`
/// [`MAX_GUIDED_CHUNKS`], so however small a device's share of the throughput
/// (and however large `k`), one run makes at most [`MAX_GUIDED_CHUNKS`] chunks
/// plus the final remainder.
pub fn chunk_floor(total: usize, multiple: usize) -> usize {
    let m = multiple.max(1);
    total.div_ceil(MAX_GUIDED_CHUNKS).div_ceil(m).max(1) * m
}

/// Split `items` into one contiguous range per device, proportional to `shares`,
/// each range's length a multiple of that device's `multiples[i]` except the last
/// non-empty range, which takes the remainder.
///
/// A device with share 0 (or a share too small for one multiple) gets an empty
/// range. If no share is positive, the first device gets everything. The ranges
/// are returned in device order and tile `0..items` exactly.
pub fn split_static(items: usize, shares: &[f64], multiples: &[usize]) -> Vec<Range<usize>> {
    let n = shares.len();
    let mut out = vec![0..0; n];
    if n == 0 {
        return out;
    }
    let clean: Vec<f64> = shares
        .iter()
        .map(|s| if s.is_finite() && *s > 0.0 { *s } else { 0.0 })
        .collect();
    let total: f64 = clean.iter().sum();
    let Some(last) = clean.iter().rposition(|s| *s > 0.0) else {
        out[0] = 0..items;
        return out;
    };
    let mut start = 0usize;
    for i in 0..n {
        if clean[i] == 0.0 {
            out[i] = start..start;
            continue;
        }
        let left = items - start;
        let count = if i == last {
            left
        } else {
            let m = multiples.get(i).copied().unwrap_or(1).max(1);
            let target = items as f64 * clean[i] / total;
            let rounded = ((target / m as f64).round() as usize).saturating_mul(m);
            rounded.min(left)
        };
        out[i] = start..start + count;
        start += count;
    }
    out
}

/// The cost of a device in the balance solver: a fixed time before its first item
/// (launch latency, broadcast uploads) and a time per item (compute plus the
/// item's share of host↔device transfer).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    /// Seconds before any item is done.
    pub fixed_s: f64,
    /// Seconds per item.
    pub per_item_s: f64,
}

impl Cost {
    /// Predicted seconds for `n` items.
    pub fn time(&self, n: f64) -> f64 {
        self.fixed_s + n * self.per_item_s
    }
}

/// The transfer-aware balance: split `items` so that every device that takes
/// part finishes at the same predicted time `T`, where device `d` finishes `n_d`
/// items at `fixed_d + n_d × per_item_d`. A device whose fixed cost alone is at
/// least `T` (it cannot finish any item before the others finish the whole job)
/// gets 0. Returns `(shares in items, T)`; shares sum to `items`.
///
/// Devices with a non-finite or non-positive per-item time are ignored (share 0).
/// This is water-filling over devices sorted by fixed cost.
pub fn balance(items: usize, costs: &[Cost]) -> (Vec<f64>, f64) {
    let mut shares = vec![0.0; costs.len()];
    let usable = |c: &Cost| c.per_item_s.is_finite() && c.per_item_s > 0.0 && c.fixed_s.is_finite();
    let mut order: Vec<usize> = (0..costs.len()).filter(|&i| usable(&costs[i])).collect();
    if order.is_empty() || items == 0 {
        return (shares, 0.0);
    }
    order.sort_by(|&a, &b| costs[a].fixed_s.max(0.0).total_cmp(&costs[b].fixed_s.max(0.0)));
    let n = items as f64;
    let (mut sum_inv, mut sum_c_over) = (0.0f64, 0.0f64);
    let mut t = f64::INFINITY;
    let mut used = 0;
    for (k, &i) in order.iter().enumerate() {
        let c = costs[i].fixed_s.max(0.0);
        let s = costs[i].per_item_s;
        // Device i joins only if the current finish time is later than its fixed cost.
        if k > 0 && t <= c {
            break;
        }
        sum_inv += 1.0 / s;
        sum_c_over += c / s;
        t = (n + sum_c_over) / sum_inv;
        used = k + 1;
    }
    for &i in &order[..used] {
        let c = costs[i].fixed_s.max(0.0);
        shares[i] = ((t - c) / costs[i].per_item_s).max(0.0);
    }
    // Normalise away rounding so the shares sum to exactly `items`.
    let sum: f64 = shares.iter().sum();
    if sum > 0.0 {
        for s in &mut shares {
            *s *= n / sum;
        }
    }
    (shares, t)
}

/// Largest chunk `n` a device may take so that it finishes no later than the
/// other devices finish everything else: `fixed + n × per_item ≤ (rest − n) /
/// others_rate`, where `rest` is the work left to the others if this device takes
/// nothing and `others_rate` their combined items/s. Returns 0 when even one item
/// would finish later.
pub fn useful_chunk(me: Cost, rest: f64, others_rate: f64) -> usize {
    if !(others_rate.is_finite() && others_rate > 0.0) {
        return usize::MAX;
    }
    let allowed = (rest / others_rate - me.fixed_s.max(0.0)) / (me.per_item_s.max(0.0) + 1.0 / others_rate);
    if allowed.is_finite() && allowed > 0.0 {
        allowed.floor().min(usize::MAX as f64 / 2.0) as usize
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn covers_exactly_once(ranges: &[Range<usize>], items: usize) -> bool {
        let mut v: Vec<Range<usize>> = ranges.iter().filter(|r| !r.is_empty()).cloned().collect();
        v.sort_by_key(|r| r.start);
        let mut at = 0;
        for r in v {
            if r.start != at {
                return false;
            }
            at = r.end;
        }
        at == items
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn static_split_tiles_and_rounds(
            items in 0usize..200_000,
            shares in prop::collection::vec(0.0f64..10.0, 1..6),
            mult_exp in prop::collection::vec(0u32..7, 6),
        ) {
            let multiples: Vec<usize> = mult_exp.iter().map(|e| 1usize << e).collect();
            let ranges = split_static(items, &shares, &multiples);
            prop_assert_eq!(ranges.len(), shares.len());
            prop_assert!(covers_exactly_once(&ranges, items));
            // Every range but the one ending at `items` is a multiple of its device's multiple.
            for (i, r) in ranges.iter().enumerate() {
                if r.end != items && !r.is_empty() {
                    prop_assert_eq!(r.len() % multiples[i], 0, "range {} = {:?}", i, r);
                }
            }
        }

        #[test]
        fn dispensing_covers_every_item_once(
            items in 0usize..500_000,
            devices in prop::collection::vec((0.01f64..1.0, 0u32..7), 1..5),
            k in 1.0f64..6.0,
            min_chunk in 0usize..3000,
            picks in prop::collection::vec(0usize..5, 1..64),
        ) {
            // Devices take HGuided chunks in an arbitrary order; together the chunks tile 0..items.
            let total: f64 = devices.iter().map(|d| d.0).sum();
            let mut at = 0;
            let mut ranges = Vec::new();
            let mut step = 0;
            while at < items {
                let d = picks[step % picks.len()] % devices.len();
                step += 1;
                let (rate, e) = devices[d];
                let m = 1usize << e;
                let n = hguided_chunk(items - at, rate / total, k, min_chunk, m);
                prop_assert!(n > 0 && n <= items - at);
                if at + n != items {
                    prop_assert_eq!(n % m, 0);
                }
                ranges.push(at..at + n);
                at += n;
            }
            prop_assert!(covers_exactly_once(&ranges, items));
        }

        #[test]
        fn hguided_chunk_count_is_bounded_for_any_rates(
            items in 1usize..50_000_000,
            rates in prop::collection::vec(1e-9f64..1.0, 1..6),
            k in 1.0f64..1e6,
            min_chunk in 0usize..64,
            e in prop::collection::vec(0u32..8, 6),
            picks in prop::collection::vec(0usize..6, 1..64),
        ) {
            // Devices with arbitrarily different rates take chunks as the dispatcher
            // sizes them (floor applied); the whole index space takes at most
            // MAX_GUIDED_CHUNKS chunks plus the final remainder.
            let total: f64 = rates.iter().sum();
            let (mut at, mut chunks, mut step) = (0usize, 0usize, 0usize);
            while at < items {
                let d = picks[step % picks.len()] % rates.len();
                step += 1;
                let m = 1usize << e[d];
                let floor = chunk_floor(items, m);
                let n = hguided_chunk(items - at, rates[d] / total, k, min_chunk.max(floor), m);
                prop_assert!(n > 0 && n <= items - at);
                at += n;
                chunks += 1;
            }
            prop_assert!(chunks <= MAX_GUIDED_CHUNKS + 1, "{} chunks for {} items", chunks, items);
        }

        #[test]
        fn hguided_chunks_shrink(
            items in 1usize..1_000_000,
            share in 0.05f64..1.0,
            k in 1.0f64..8.0,
            min_chunk in 0usize..5000,
            e in 0u32..8,
        ) {
            let m = 1usize << e;
            let mut at = 0;
            let mut prev = usize::MAX;
            let mut chunks = 0;
            while at < items {
                let n = hguided_chunk(items - at, share, k, min_chunk, m);
                if at + n < items {
                    // Every chunk but the final remainder is no larger than the one before.
                    prop_assert!(n <= prev, "chunk {} after {}", n, prev);
                    prop_assert!(n >= (min_chunk / m * m).max(m));
                } else if prev != usize::MAX {
                    // The final remainder is below what the policy would have asked for.
                    prop_assert!(n <= prev.max(min_chunk).max(m) + m, "final {} after {}", n, prev);
                }
                prev = n;
                at += n;
                chunks += 1;
                prop_assert!(chunks <= items);
            }
            prop_assert_eq!(at, items);
        }

        #[test]
        fn balance_equalises_finish_times(
            items in 1usize..10_000_000,
            costs in prop::collection::vec((0.0f64..0.05, 1e-9f64..1e-5), 1..5),
        ) {
            let costs: Vec<Cost> = costs.iter().map(|&(f, p)| Cost { fixed_s: f, per_item_s: p }).collect();
            let (shares, t) = balance(items, &costs);
            let sum: f64 = shares.iter().sum();
            prop_assert!((sum - items as f64).abs() <= 1e-6 * items as f64);
            for (c, s) in costs.iter().zip(&shares) {
                if *s > 0.0 {
                    // Participants finish together at T.
                    prop_assert!((c.time(*s) - t).abs() <= 1e-6 * t.max(1e-9), "{:?} {} {}", c, s, t);
                } else {
                    // Non-participants could not finish one item before T.
                    prop_assert!(c.fixed_s >= t * (1.0 - 1e-9), "{:?} excluded but T = {}", c, t);
                }
            }
        }

        #[test]
        fn useful_chunk_never_finishes_last(
            fixed in 0.0f64..0.01, per in 1e-8f64..1e-4, rest in 1.0f64..1e6, rate in 1e3f64..1e9,
        ) {
            let me = Cost { fixed_s: fixed, per_item_s: per };
            let n = useful_chunk(me, rest, rate);
            if n > 0 {
                prop_assert!(me.time(n as f64) <= (rest - n as f64) / rate * (1.0 + 1e-9) + 1e-12);
            } else {
                prop_assert!(me.time(1.0) > (rest - 1.0) / rate * (1.0 - 1e-9));
            }
        }
    }

    #[test]
    fn chunk_floor_examples() {
        assert_eq!(chunk_floor(10_000_000, 16), 39_072);
        assert_eq!(chunk_floor(100, 32), 32);
        assert_eq!(chunk_floor(0, 8), 8);
        assert_eq!(chunk_floor(1, 0), 1);
    }

    #[test]
    fn round_chunk_examples() {
        assert_eq!(round_chunk(100, 1000, 32), 96);
        assert_eq!(round_chunk(5, 1000, 32), 32);
        assert_eq!(round_chunk(990, 1000, 32), 960);
        assert_eq!(round_chunk(999, 1000, 32), 992);
        assert_eq!(round_chunk(1200, 1000, 32), 1000);
        assert_eq!(round_chunk(20, 20, 32), 20);
    }

    #[test]
    fn balance_excludes_a_device_dominated_by_transfer() {
        // A fast device with 10 ms of fixed cost against a job the other finishes in 1 ms.
        let costs = [
            Cost {
                fixed_s: 0.0,
                per_item_s: 1e-9,
            },
            Cost {
                fixed_s: 0.01,
                per_item_s: 1e-10,
            },
        ];
        let (shares, t) = balance(1_000_000, &costs);
        assert_eq!(shares[1], 0.0);
        assert!((t - 1e-3).abs() < 1e-9);
        // With a bigger job it joins and takes most of it.
        let (shares, _) = balance(1_000_000_000, &costs);
        assert!(shares[1] > shares[0]);
    }
}
