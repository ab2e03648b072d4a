//! Properties of `memkern_core::search` on arbitrary input: nothing panics,
//! resolved dates are well-formed, and an index that saw inserts and
//! removes ranks exactly like one built from scratch.
#![cfg(feature = "alloc")]

use memkern_core::search::DocId;
use memkern_core::search::bm25::{Bm25Index, Bm25Params};
use memkern_core::search::int8::{Int8Index, dot_i8, quantize};
use memkern_core::search::temporal::{Day, QueryTime, absolute_dates, resolve_relative};
use memkern_core::search::text::Analyzer;
use proptest::prelude::*;

/// Words that exercise the time grammar, mixed with noise.
fn time_words() -> impl Strategy<Value = String> {
    let words = prop::sample::select(vec![
        "yesterday",
        "today",
        "tomorrow",
        "last",
        "this",
        "next",
        "past",
        "week",
        "weekend",
        "month",
        "year",
        "summer",
        "winter",
        "friday",
        "sunday",
        "ago",
        "two",
        "a",
        "few",
        "couple",
        "of",
        "days",
        "weeks",
        "months",
        "years",
        "in",
        "the",
        "other",
        "day",
        "3",
        "may",
        "2023",
        "8",
        "june",
        "recently",
        "night",
        "when",
        "did",
        "dog",
        "12th",
        ",",
    ]);
    prop::collection::vec(words, 0..12).prop_map(|w| w.join(" "))
}

proptest! {
    #[test]
    fn tokenizer_never_panics(text in any::<String>()) {
        for t in Analyzer::DEFAULT.tokens(&text) {
            prop_assert!(!t.as_str().is_empty());
            prop_assert!(t.as_str().len() <= memkern_core::search::text::MAX_TOKEN_LEN);
        }
    }

    #[test]
    fn time_resolution_is_well_formed(text in time_words(), said in -100_000i32..100_000) {
        let said = Day(said);
        let mut last_end = 0;
        resolve_relative(&text, said, |m| {
            assert!(m.span.first <= m.span.last);
            assert!(m.start < m.end && m.end <= text.len());
            assert!(m.start >= last_end, "mentions do not overlap");
            last_end = m.end;
            // Relative expressions stay within a few years of the day said.
            assert!((m.span.first.0 - said.0).abs() < 20 * 366);
        });
        absolute_dates(&text, |m| assert!(m.span.first <= m.span.last));
        let _ = QueryTime::of(&text, Some(said));
    }

    #[test]
    fn time_resolution_never_panics_on_any_text(text in any::<String>(), said in any::<i32>()) {
        resolve_relative(&text, Day(said / 2), |_| {});
        absolute_dates(&text, |_| {});
        let _ = QueryTime::of(&text, Some(Day(said / 2)));
    }

    #[test]
    fn civil_round_trip(day in -3_000_000i32..3_000_000) {
        let (y, m, d) = Day(day).civil();
        prop_assert_eq!(Day::from_civil(y, m, d), Some(Day(day)));
        prop_assert_eq!(Day(day).plus(7).weekday(), Day(day).weekday());
    }

    #[test]
    fn removes_leave_the_index_as_if_never_inserted(
        docs in prop::collection::vec(time_words(), 1..20),
        remove_mask in prop::collection::vec(any::<bool>(), 20),
        query in time_words(),
    ) {
        let mut churned = Bm25Index::new(Analyzer::DEFAULT, Bm25Params::DEFAULT);
        let mut fresh = Bm25Index::new(Analyzer::DEFAULT, Bm25Params::DEFAULT);
        for (i, d) in docs.iter().enumerate() {
            churned.insert(DocId(i as u32), d).expect("test input is valid");
        }
        for (i, d) in docs.iter().enumerate() {
            if remove_mask[i] {
                prop_assert!(churned.remove(DocId(i as u32)));
            } else {
                fresh.insert(DocId(i as u32), d).expect("test input is valid");
            }
        }
        prop_assert_eq!(churned.len(), fresh.len());
        prop_assert_eq!(churned.term_count(), fresh.term_count());
        prop_assert_eq!(churned.search(&query, 50), fresh.search(&query, 50));
    }

    #[test]
    fn int8_dot_matches_i64_reference(a in prop::collection::vec(any::<i8>(), 0..600), b in prop::collection::vec(any::<i8>(), 0..600)) {
        let want: i64 = a.iter().zip(&b).map(|(&x, &y)| i64::from(x) * i64::from(y)).sum();
        prop_assert_eq!(i64::from(dot_i8(&a, &b)), want);
    }

    #[test]
    fn int8_index_finds_a_vector_itself(vs in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, 16), 1..30), pick in any::<prop::sample::Index>()) {
        let mut ix = Int8Index::new(16);
        let mut kept = Vec::new();
        for (i, v) in vs.iter().enumerate() {
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm < 0.5 {
                continue;
            }
            let u: Vec<f32> = v.iter().map(|x| x / norm).collect();
            ix.insert_f32(DocId(i as u32), &u).expect("test input is valid");
            kept.push((i, u));
        }
        prop_assume!(!kept.is_empty());
        let (i, u) = &kept[pick.index(kept.len())];
        let mut q = vec![0i8; 16];
        let s = quantize(u, &mut q).expect("test input is valid");
        let top = ix.search(&q, s, 1);
        // Itself, or a near-duplicate whose cosine is within int8 error.
        let best = kept.iter().find(|(j, _)| DocId(*j as u32) == top[0].doc).expect("test input is valid");
        let cos: f32 = best.1.iter().zip(u).map(|(a, b)| a * b).sum();
        prop_assert!(top[0].doc == DocId(*i as u32) || cos > 0.97, "cos {}", cos);
    }
}
