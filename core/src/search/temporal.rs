//! Time in memory text: civil dates, relative expressions resolved to
//! absolute dates, and questions that ask about time.
//!
//! It exists because conversation is full of "yesterday", "last Saturday"
//! and "two weeks ago", which mean nothing once the memory is read a month
//! later. memkern resolves them at write time against the moment the memory
//! was said ([`resolve_relative`]) and stores the dates with the memory;
//! questions that ask "when" ([`QueryTime::of`]) boost memories that carry
//! such a date, and questions naming a month or year boost memories from
//! that period. All integer arithmetic, no heap.
//!
//! Week convention: weeks run Monday–Sunday (ISO 8601); a weekend is the
//! Saturday and Sunday of a week.

use crate::time::Timestamp;

/// A calendar day: days since 1970-01-01 (proleptic Gregorian, UTC).
///
/// It exists so that date arithmetic ("minus one week") is integer
/// addition, identical on every target.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Day(pub i32);

/// Day of the week.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Weekday {
    /// Monday (ISO day 1).
    Monday = 0,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

impl Weekday {
    const ALL: [Weekday; 7] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];

    /// Days after Monday (Monday = 0 … Sunday = 6).
    pub fn index(self) -> i32 {
        self as i32
    }

    /// Parses an English weekday name (any case).
    pub fn from_name(word: &str) -> Option<Weekday> {
        const NAMES: [&str; 7] = [
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
            "sunday",
        ];
        NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(word))
            .and_then(|i| Weekday::ALL.get(i).copied())
    }
}

/// Whether `y` is a Gregorian leap year.
pub fn is_leap_year(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Days in month `m` (1–12) of year `y`; 0 for an invalid month.
pub fn days_in_month(y: i32, m: u8) -> u8 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Parses an English month name or its three-letter abbreviation (any case)
/// to 1–12.
pub fn month_from_name(word: &str) -> Option<u8> {
    const NAMES: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    let pos = NAMES.iter().position(|n| {
        n.eq_ignore_ascii_case(word)
            || (word.len() == 3
                && *n != "may"
                && n.get(..3).is_some_and(|p| p.eq_ignore_ascii_case(word)))
            || (word.eq_ignore_ascii_case("sept") && *n == "september")
    })?;
    // `pos` < 12.
    Some(pos as u8 + 1)
}

impl Day {
    /// The day of a civil date, or `None` if the date does not exist.
    ///
    /// Howard Hinnant's `days_from_civil`, valid for years ±5 million.
    pub fn from_civil(y: i32, m: u8, d: u8) -> Option<Day> {
        if !(1..=12).contains(&m)
            || d == 0
            || d > days_in_month(y, m)
            || !(-5_000_000..=5_000_000).contains(&y)
        {
            return None;
        }
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400); // [0, 399]
        let m = i32::from(m);
        let mp = (m + 9) % 12; // March = 0
        let doy = (153 * mp + 2) / 5 + i32::from(d) - 1; // [0, 365]
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
        Some(Day(era * 146_097 + doe - 719_468))
    }

    /// The civil date (year, month 1–12, day 1–31) of this day.
    ///
    /// Howard Hinnant's `civil_from_days`.
    pub fn civil(self) -> (i32, u8, u8) {
        let z = i64::from(self.0) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097); // [0, 146096]
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
        let mp = (5 * doy + 2) / 153; // [0, 11]
        let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
        let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
        let y = yoe + era * 400 + i64::from(m <= 2);
        // |y| < 2^31 / 365 for any i32 day count; m and d are small.
        (y as i32, m as u8, d as u8)
    }

    /// The day a timestamp falls on (UTC).
    pub fn of(ts: Timestamp) -> Day {
        // |ms / 86.4e6| < 2^31 for any i64 ms.
        Day(ts.0.div_euclid(Timestamp::DAY) as i32)
    }

    /// Midnight (UTC) at the start of this day.
    pub fn start(self) -> Timestamp {
        Timestamp(i64::from(self.0) * Timestamp::DAY)
    }

    /// The day of the week (1970-01-01 was a Thursday).
    pub fn weekday(self) -> Weekday {
        let i = (self.0.rem_euclid(7) + 3) % 7;
        // `i` is in 0..7.
        Weekday::ALL[i as usize]
    }

    /// `n` days later (earlier when negative), saturating.
    pub fn plus(self, n: i32) -> Day {
        Day(self.0.saturating_add(n))
    }

    /// The Monday of this day's week.
    pub fn monday(self) -> Day {
        self.plus(-self.weekday().index())
    }
}

/// How precise a resolved date is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Granularity {
    /// One day ("yesterday", "last Friday").
    Day,
    /// A Saturday–Sunday ("last weekend").
    Weekend,
    /// A Monday–Sunday week, or a week around a day ("two weeks ago").
    Week,
    /// A calendar month ("last month", "May 2023").
    Month,
    /// A meteorological season ("last summer").
    Season,
    /// A calendar year ("last year", "in 2022").
    Year,
    /// A loose range ("recently", "the other day", "a few years ago").
    Vague,
}

/// An inclusive range of days with its precision.
///
/// It exists because "last week" is not a day: matching a question's period
/// against a memory's dates is range overlap.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DateSpan {
    /// First day (inclusive).
    pub first: Day,
    /// Last day (inclusive).
    pub last: Day,
    /// How precise the span is.
    pub granularity: Granularity,
}

impl DateSpan {
    /// A single day.
    pub fn day(d: Day) -> DateSpan {
        DateSpan {
            first: d,
            last: d,
            granularity: Granularity::Day,
        }
    }

    /// Whether the two spans share a day.
    pub fn overlaps(&self, other: &DateSpan) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// Whether `d` is inside the span.
    pub fn contains(&self, d: Day) -> bool {
        self.first <= d && d <= self.last
    }

    /// The calendar month `m` of year `y`.
    pub fn month(y: i32, m: u8) -> Option<DateSpan> {
        Some(DateSpan {
            first: Day::from_civil(y, m, 1)?,
            last: Day::from_civil(y, m, days_in_month(y, m))?,
            granularity: Granularity::Month,
        })
    }

    /// The calendar year `y`.
    pub fn year(y: i32) -> Option<DateSpan> {
        Some(DateSpan {
            first: Day::from_civil(y, 1, 1)?,
            last: Day::from_civil(y, 12, 31)?,
            granularity: Granularity::Year,
        })
    }

    fn range(first: Day, last: Day, granularity: Granularity) -> DateSpan {
        DateSpan {
            first,
            last,
            granularity,
        }
    }
}

/// A relative time expression found in a text and resolved to dates.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TimeMention {
    /// The resolved dates.
    pub span: DateSpan,
    /// Byte offset of the expression's first word in the text.
    pub start: usize,
    /// Byte offset just past the expression's last word.
    pub end: usize,
}

/// A word of the text with its byte range.
#[derive(Clone, Copy)]
struct Word<'a> {
    text: &'a str,
    start: usize,
    end: usize,
}

impl Word<'_> {
    fn is(&self, w: &str) -> bool {
        self.text.eq_ignore_ascii_case(w)
    }
    fn is_any(&self, ws: &[&str]) -> bool {
        ws.iter().any(|w| self.is(w))
    }
}

/// Alphanumeric runs of `text` with their byte ranges.
fn words(text: &str) -> impl Iterator<Item = Word<'_>> {
    let mut rest_start = 0usize;
    core::iter::from_fn(move || {
        let rest = text.get(rest_start..)?;
        let (off, _) = rest.char_indices().find(|(_, c)| c.is_alphanumeric())?;
        let start = rest_start + off;
        let tail = text.get(start..)?;
        let len = tail
            .char_indices()
            .find(|(_, c)| !c.is_alphanumeric())
            .map_or(tail.len(), |(i, _)| i);
        rest_start = start + len;
        Some(Word {
            text: tail.get(..len)?,
            start,
            end: start + len,
        })
    })
}

/// A small count in digits or words ("3", "three", "a", "couple").
fn count_of(w: &str) -> Option<i32> {
    const WORDS: [&str; 13] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve",
    ];
    if let Some(i) = WORDS.iter().position(|n| n.eq_ignore_ascii_case(w)) {
        // `i` < 13.
        return Some(i as i32);
    }
    if w.eq_ignore_ascii_case("a") || w.eq_ignore_ascii_case("an") {
        return Some(1);
    }
    if w.eq_ignore_ascii_case("couple") {
        return Some(2);
    }
    if w.eq_ignore_ascii_case("few") || w.eq_ignore_ascii_case("several") {
        return Some(3);
    }
    if w.len() <= 3 && w.bytes().all(|b| b.is_ascii_digit()) {
        return w.parse().ok();
    }
    None
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Day,
    Week,
    Weekend,
    Month,
    Year,
}

fn unit_of(w: &str) -> Option<Unit> {
    let w = w.strip_suffix('s').filter(|s| !s.is_empty()).unwrap_or(w);
    [
        ("day", Unit::Day),
        ("week", Unit::Week),
        ("weekend", Unit::Weekend),
        ("month", Unit::Month),
        ("year", Unit::Year),
    ]
    .iter()
    .find(|(n, _)| n.eq_ignore_ascii_case(w))
    .map(|&(_, u)| u)
}

/// The month `delta` months after the month of `d`.
fn month_shift(d: Day, delta: i32) -> Option<DateSpan> {
    let (y, m, _) = d.civil();
    let idx = y
        .checked_mul(12)?
        .checked_add(i32::from(m) - 1)?
        .checked_add(delta)?;
    // rem_euclid(12) is in 0..12.
    DateSpan::month(idx.div_euclid(12), idx.rem_euclid(12) as u8 + 1)
}

/// Season `s` (0 spring, 1 summer, 2 fall, 3 winter) of year `y`; winter `y`
/// runs from December `y` to February `y + 1`.
fn season(y: i32, s: u8) -> Option<DateSpan> {
    let (first, last) = match s {
        0 => (Day::from_civil(y, 3, 1)?, Day::from_civil(y, 5, 31)?),
        1 => (Day::from_civil(y, 6, 1)?, Day::from_civil(y, 8, 31)?),
        2 => (Day::from_civil(y, 9, 1)?, Day::from_civil(y, 11, 30)?),
        _ => (
            Day::from_civil(y, 12, 1)?,
            Day::from_civil(y + 1, 3, 1)?.plus(-1),
        ),
    };
    Some(DateSpan::range(first, last, Granularity::Season))
}

fn season_of(w: &str) -> Option<u8> {
    ["spring", "summer", "fall", "winter"]
        .iter()
        .position(|n| n.eq_ignore_ascii_case(w))
        .or_else(|| w.eq_ignore_ascii_case("autumn").then_some(2))
        // position < 4.
        .map(|i| i as u8)
}

/// Which way a modifier points: last (−1), this (0), next (+1).
fn direction(w: &Word<'_>) -> Option<i32> {
    if w.is_any(&["last", "past"]) {
        Some(-1)
    } else if w.is("this") {
        Some(0)
    } else if w.is_any(&["next", "coming"]) {
        Some(1)
    } else {
        None
    }
}

fn resolve_season(said: Day, s: u8, dir: i32) -> Option<DateSpan> {
    let (y, _, _) = said.civil();
    // Candidates around `said`, in time order.
    let mut cands = [None; 4];
    for (i, yy) in (y - 2..=y + 1).enumerate() {
        cands[i] = season(yy, s);
    }
    let mut out = None;
    for c in cands.iter().flatten() {
        match dir {
            -1 if c.last < said => out = Some(*c),
            0 if c.last >= said => return Some(*c),
            1 if c.first > said => return Some(*c),
            _ => {}
        }
    }
    out
}

/// Resolves one expression ending at `w[3]` (`w[0..3]` are the up-to-three
/// preceding words). Returns the span and how many words it used.
fn match_at(w: &[Option<Word<'_>>; 4], said: Day) -> Option<(DateSpan, usize)> {
    let cur = w[3]?;
    let p1 = w[2];
    let p2 = w[1];
    let p3 = w[0];
    let day = |n: i32| Some(DateSpan::day(said.plus(n)));
    if cur.is("yesterday") {
        return Some((day(-1)?, 1));
    }
    if cur.is_any(&["today", "tonight"]) {
        return Some((day(0)?, 1));
    }
    if cur.is("tomorrow") {
        return Some((day(1)?, 1));
    }
    if cur.is("recently") || cur.is("lately") {
        return Some((DateSpan::range(said.plus(-30), said, Granularity::Vague), 1));
    }
    if cur.is("night") && p1.is_some_and(|p| p.is("last")) {
        return Some((day(-1)?, 2));
    }
    if cur.is_any(&["morning", "afternoon", "evening"]) && p1.is_some_and(|p| p.is("this")) {
        return Some((day(0)?, 2));
    }
    if cur.is("day") && p1.is_some_and(|p| p.is("other")) && p2.is_some_and(|p| p.is("the")) {
        return Some((
            DateSpan::range(said.plus(-7), said.plus(-1), Granularity::Vague),
            3,
        ));
    }
    // last / this / next + weekday, unit or season ("this past Friday" too).
    if let Some(dir) = p1.as_ref().and_then(direction) {
        let used = if p1.is_some_and(|p| p.is("past")) && p2.is_some_and(|p| p.is("this")) {
            3
        } else {
            2
        };
        if let Some(wd) = Weekday::from_name(cur.text) {
            let today = said.weekday().index();
            let target = wd.index();
            let d = match dir {
                // Most recent strictly before `said`.
                -1 => -((today - target + 6).rem_euclid(7) + 1),
                // The one in the current Monday–Sunday week.
                0 => target - today,
                // The next one strictly after `said`.
                _ => (target - today + 6).rem_euclid(7) + 1,
            };
            return Some((day(d)?, used));
        }
        if let Some(s) = season_of(cur.text) {
            return Some((resolve_season(said, s, dir)?, used));
        }
        // Plural units ("last weeks") are not this pattern.
        if !cur.text.ends_with('s') || cur.text.eq_ignore_ascii_case("weekends") {
            match unit_of(cur.text) {
                Some(Unit::Week) => {
                    let first = said.monday().plus(7 * dir);
                    return Some((
                        DateSpan::range(first, first.plus(6), Granularity::Week),
                        used,
                    ));
                }
                Some(Unit::Weekend) => {
                    let sat = said.monday().plus(5 + 7 * dir);
                    return Some((
                        DateSpan::range(sat, sat.plus(1), Granularity::Weekend),
                        used,
                    ));
                }
                Some(Unit::Month) => return Some((month_shift(said, dir)?, used)),
                Some(Unit::Year) => {
                    let (y, _, _) = said.civil();
                    return Some((DateSpan::year(y + dir)?, used));
                }
                Some(Unit::Day) | None => {}
            }
        }
    }
    // "<count> <unit> ago", "a few <unit> ago", "a couple of <unit> ago";
    // "in <count> <unit>" (future).
    let ago = cur.is("ago");
    let (unit_w, n_w) = if ago {
        let n = if p2.is_some_and(|p| p.is("of")) {
            p3?
        } else {
            p2?
        };
        (p1?, n)
    } else {
        let n = p1?;
        if !p2.is_some_and(|p| p.is("in")) {
            return None;
        }
        (cur, n)
    };
    let unit = unit_of(unit_w.text)?;
    let n = count_of(n_w.text)?;
    let vague = n_w.is_any(&["few", "several", "couple"]);
    let sign = if ago { -1 } else { 1 };
    let words_used = if ago {
        if p2.is_some_and(|p| p.is("of")) { 4 } else { 3 }
    } else {
        3
    };
    let span = match unit {
        Unit::Day if vague => {
            DateSpan::range(said.plus(sign * 5), said.plus(sign * 2), Granularity::Vague)
        }
        Unit::Day => DateSpan::day(said.plus(sign * n)),
        Unit::Week | Unit::Weekend => {
            let c = said.plus(sign * 7 * n);
            let g = if vague {
                Granularity::Vague
            } else {
                Granularity::Week
            };
            DateSpan::range(c.plus(-3), c.plus(3), g)
        }
        Unit::Month if vague => {
            let a = month_shift(said, sign * 4)?;
            let b = month_shift(said, sign * 2)?;
            let (first, last) = if sign < 0 {
                (a.first, b.last)
            } else {
                (b.first, a.last)
            };
            DateSpan::range(first, last, Granularity::Vague)
        }
        Unit::Month => month_shift(said, sign * n)?,
        Unit::Year => {
            let (y, _, _) = said.civil();
            if vague {
                let (a, b) = (DateSpan::year(y + sign * 5)?, DateSpan::year(y + sign * 2)?);
                let (first, last) = if sign < 0 {
                    (a.first, b.last)
                } else {
                    (b.first, a.last)
                };
                DateSpan::range(first, last, Granularity::Vague)
            } else {
                DateSpan::year(y + sign * n)?
            }
        }
    };
    let (first, last) = if span.first <= span.last {
        (span.first, span.last)
    } else {
        (span.last, span.first)
    };
    Some((
        DateSpan {
            first,
            last,
            ..span
        },
        words_used,
    ))
}

/// Finds the relative time expressions of `text` ("yesterday", "last
/// Saturday", "this weekend", "two weeks ago", "last summer", "in a few
/// days", "recently"…) and calls `found` with each, resolved against
/// `said`, the day the text was said or written.
///
/// Expressions never overlap; each is reported once, in text order.
pub fn resolve_relative(text: &str, said: Day, mut found: impl FnMut(TimeMention)) {
    let mut window: [Option<Word<'_>>; 4] = [None; 4];
    // Index (in the running word count) of the last word already consumed.
    let mut consumed_until = 0usize;
    for (i, w) in words(text).enumerate() {
        window = [window[1], window[2], window[3], Some(w)];
        let pos = i + 1;
        if let Some((span, used)) = match_at(&window, said) {
            // Do not reuse words of an earlier expression.
            if pos >= used && pos - used >= consumed_until {
                let first = window[4 - used];
                found(TimeMention {
                    span,
                    start: first.map_or(w.start, |f| f.start),
                    end: w.end,
                });
                consumed_until = pos;
            }
        }
    }
}

/// Absolute dates named in a text: "May 2023", "8 May, 2023", "May 8th,
/// 2023", "in 2022". A month without a year is not resolved.
pub fn absolute_dates(text: &str, mut found: impl FnMut(TimeMention)) {
    let mut prev: [Option<Word<'_>>; 2] = [None; 2];
    let mut it = words(text).peekable();
    while let Some(w) = it.next() {
        let year_of = |x: &Word<'_>| -> Option<i32> {
            (x.text.len() == 4 && x.text.bytes().all(|b| b.is_ascii_digit()))
                .then(|| x.text.parse::<i32>().ok())
                .flatten()
                .filter(|y| (1900..=2100).contains(y))
        };
        let day_of = |x: &Word<'_>| -> Option<u8> {
            let digits = x.text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let d: u8 = digits.parse().ok()?;
            (1..=31).contains(&d).then_some(d)
        };
        if let Some(m) = month_from_name(w.text) {
            // "May 8th, 2023" / "May 2023".
            let next = it.peek().copied();
            let (day, year_word) = match next {
                Some(n) if day_of(&n).is_some() && year_of(&n).is_none() => {
                    let _ = it.next();
                    (day_of(&n), it.peek().copied())
                }
                _ => (prev[1].as_ref().and_then(day_of), next),
            };
            if let Some(y) = year_word.as_ref().and_then(year_of) {
                let _ = it.next();
                let span = day
                    .and_then(|d| Day::from_civil(y, m, d).map(DateSpan::day))
                    .or_else(|| DateSpan::month(y, m));
                if let (Some(span), Some(yw)) = (span, year_word) {
                    found(TimeMention {
                        span,
                        start: w.start,
                        end: yw.end,
                    });
                }
                prev = [None, None];
                continue;
            }
        } else if let Some(span) = year_of(&w).and_then(DateSpan::year) {
            found(TimeMention {
                span,
                start: w.start,
                end: w.end,
            });
        }
        prev = [prev[1], Some(w)];
    }
}

/// What a question asks about time.
///
/// It exists so retrieval can boost memories that carry a date when the
/// question asks "when", and memories from a named period ("in May 2023").
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QueryTime {
    /// The question asks for a time: "when", "what year", "how long ago"…
    pub asks_time: bool,
    /// The first period the question names, if any.
    pub span: Option<DateSpan>,
}

impl QueryTime {
    /// Analyses a question. Relative expressions in the question ("last
    /// week") are resolved against `now` when given.
    pub fn of(question: &str, now: Option<Day>) -> QueryTime {
        let mut asks_time = false;
        let mut prev: Option<Word<'_>> = None;
        for w in words(question) {
            let time_noun = w.is_any(&[
                "date", "year", "month", "day", "week", "time", "season", "weekend",
            ]);
            if w.is_any(&["when", "ago", "since"])
                || (time_noun && prev.is_some_and(|p| p.is_any(&["what", "which"])))
                || (w.is("long") && prev.is_some_and(|p| p.is("how")))
                || (unit_of(w.text).is_some()
                    && w.text.ends_with('s')
                    && prev.is_some_and(|p| p.is("many")))
            {
                asks_time = true;
            }
            prev = Some(w);
        }
        let mut span = None;
        absolute_dates(question, |m| {
            if span.is_none() {
                span = Some(m.span);
            }
        });
        if let (None, Some(now)) = (span, now) {
            resolve_relative(question, now, |m| {
                if span.is_none() {
                    span = Some(m.span);
                }
            });
        }
        QueryTime { asks_time, span }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn d(y: i32, m: u8, day: u8) -> Day {
        Day::from_civil(y, m, day).expect("test input is valid")
    }

    fn resolve(text: &str, said: Day) -> Vec<(Day, Day, Granularity, &str)> {
        let mut out = Vec::new();
        resolve_relative(text, said, |m| {
            out.push((
                m.span.first,
                m.span.last,
                m.span.granularity,
                &text[m.start..m.end],
            ))
        });
        out
    }

    #[test]
    fn civil_round_trip_and_known_days() {
        assert_eq!(d(1970, 1, 1), Day(0));
        assert_eq!(d(2000, 3, 1), Day(11_017));
        assert_eq!(d(2023, 5, 8), Day(19_485));
        assert_eq!(d(1969, 12, 31), Day(-1));
        assert_eq!(Day(19_485).civil(), (2023, 5, 8));
        assert_eq!(d(2023, 5, 8).weekday(), Weekday::Monday);
        assert_eq!(Day(0).weekday(), Weekday::Thursday);
        assert_eq!(d(2024, 2, 29).civil(), (2024, 2, 29));
        assert_eq!(Day::from_civil(2023, 2, 29), None);
        assert_eq!(Day::from_civil(2023, 13, 1), None);
        assert_eq!(Day::from_civil(2023, 4, 31), None);
        for day in (-800_000..800_000).step_by(997) {
            let (y, m, dd) = Day(day).civil();
            assert_eq!(Day::from_civil(y, m, dd), Some(Day(day)));
        }
        assert_eq!(Day::of(Timestamp(1_683_553_000_000)), d(2023, 5, 8));
        assert_eq!(Day::of(Timestamp(-1)), Day(-1));
        assert_eq!(d(2023, 5, 8).start(), Timestamp(1_683_504_000_000));
        assert_eq!(month_from_name("Sept"), Some(9));
        assert_eq!(month_from_name("MAY"), Some(5));
        assert_eq!(month_from_name("mar"), Some(3));
        assert_eq!(month_from_name("maybe"), None);
    }

    #[test]
    fn resolves_days_and_weekdays() {
        // Monday 8 May 2023.
        let said = d(2023, 5, 8);
        let r = resolve(
            "I went to a support group yesterday and it was great.",
            said,
        );
        assert_eq!(
            r,
            [(d(2023, 5, 7), d(2023, 5, 7), Granularity::Day, "yesterday")]
        );
        assert_eq!(resolve("Tomorrow!", said)[0].0, d(2023, 5, 9));
        assert_eq!(resolve("tonight", said)[0].0, said);
        assert_eq!(resolve("last night", said)[0].0, d(2023, 5, 7));
        assert_eq!(resolve("last Saturday", said)[0].0, d(2023, 5, 6));
        // "last Monday" said on a Monday is a week earlier.
        assert_eq!(resolve("last Monday", said)[0].0, d(2023, 5, 1));
        assert_eq!(resolve("next Monday", said)[0].0, d(2023, 5, 15));
        assert_eq!(resolve("this Friday", said)[0].0, d(2023, 5, 12));
        let r = resolve("this past Friday", said);
        assert_eq!((r[0].0, r[0].3), (d(2023, 5, 5), "this past Friday"));
    }

    #[test]
    fn resolves_weeks_months_years_and_seasons() {
        let said = d(2023, 5, 8); // Monday
        let r = resolve("I started last week.", said);
        assert_eq!(
            r,
            [(d(2023, 5, 1), d(2023, 5, 7), Granularity::Week, "last week")]
        );
        assert_eq!(resolve("this week", said)[0].0, d(2023, 5, 8));
        assert_eq!(resolve("next week", said)[0].1, d(2023, 5, 21));
        let r = resolve("last weekend", said);
        assert_eq!(
            (r[0].0, r[0].1, r[0].2),
            (d(2023, 5, 6), d(2023, 5, 7), Granularity::Weekend)
        );
        assert_eq!(resolve("this weekend", said)[0].0, d(2023, 5, 13));
        let r = resolve("last month", said);
        assert_eq!((r[0].0, r[0].1), (d(2023, 4, 1), d(2023, 4, 30)));
        let r = resolve("last month", d(2023, 1, 15));
        assert_eq!((r[0].0, r[0].1), (d(2022, 12, 1), d(2022, 12, 31)));
        assert_eq!(resolve("next month", d(2023, 12, 3))[0].0, d(2024, 1, 1));
        let r = resolve("last year", said);
        assert_eq!(
            (r[0].0, r[0].1, r[0].2),
            (d(2022, 1, 1), d(2022, 12, 31), Granularity::Year)
        );
        let r = resolve("last summer", said);
        assert_eq!((r[0].0, r[0].1), (d(2022, 6, 1), d(2022, 8, 31)));
        assert_eq!(resolve("last summer", d(2023, 10, 2))[0].0, d(2023, 6, 1));
        let r = resolve("last winter", said);
        assert_eq!((r[0].0, r[0].1), (d(2022, 12, 1), d(2023, 2, 28)));
    }

    #[test]
    fn resolves_counts_ago_and_ahead() {
        let said = d(2023, 5, 8);
        let r = resolve("two days ago", said);
        assert_eq!((r[0].0, r[0].3), (d(2023, 5, 6), "two days ago"));
        let r = resolve("I adopted her 3 years ago.", said);
        assert_eq!((r[0].0, r[0].1), (d(2020, 1, 1), d(2020, 12, 31)));
        let r = resolve("a year ago", said);
        assert_eq!(r[0].0, d(2022, 1, 1));
        let r = resolve("two weeks ago", said);
        assert_eq!(
            (r[0].0, r[0].1, r[0].2),
            (d(2023, 4, 21), d(2023, 4, 27), Granularity::Week)
        );
        let r = resolve("a couple of months ago", said);
        assert_eq!(
            (r[0].0, r[0].1, r[0].2),
            (d(2023, 1, 1), d(2023, 3, 31), Granularity::Vague)
        );
        let r = resolve("a few years ago", said);
        assert_eq!((r[0].0, r[0].1), (d(2018, 1, 1), d(2021, 12, 31)));
        let r = resolve("in two weeks", said);
        assert_eq!(r[0].0, d(2023, 5, 19));
        let r = resolve("The other day I saw it, recently too", said);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].0, r[0].1, r[0].3),
            (d(2023, 5, 1), d(2023, 5, 7), "The other day")
        );
        assert!(resolve("I love the lake. Weeks are long, years ago?", said).is_empty());
        assert!(resolve("", said).is_empty());
    }

    #[test]
    fn finds_absolute_dates() {
        let mut got = Vec::new();
        absolute_dates(
            "On 8 May, 2023 and May 9th, 2023; June 2022; back in 2019, May.",
            |m| got.push((m.span.first, m.span.last, m.span.granularity)),
        );
        assert_eq!(
            got,
            [
                (d(2023, 5, 8), d(2023, 5, 8), Granularity::Day),
                (d(2023, 5, 9), d(2023, 5, 9), Granularity::Day),
                (d(2022, 6, 1), d(2022, 6, 30), Granularity::Month),
                (d(2019, 1, 1), d(2019, 12, 31), Granularity::Year),
            ]
        );
    }

    #[test]
    fn detects_temporal_questions() {
        let q = QueryTime::of("When did Caroline go to the LGBTQ support group?", None);
        assert!(q.asks_time);
        assert_eq!(q.span, None);
        assert!(QueryTime::of("What year did Audrey adopt her dogs?", None).asks_time);
        assert!(QueryTime::of("How long ago was Caroline's 18th birthday?", None).asks_time);
        assert!(QueryTime::of("How many years passed between X and Y?", None).asks_time);
        assert!(!QueryTime::of("What is Caroline's identity?", None).asks_time);
        assert!(!QueryTime::of("How many children does Melanie have?", None).asks_time);
        let q = QueryTime::of("What did Melanie paint in May 2023?", None);
        assert_eq!(q.span, DateSpan::month(2023, 5));
        let q = QueryTime::of("What did Jon do last week?", Some(d(2023, 5, 8)));
        assert_eq!(q.span.map(|s| s.first), Some(d(2023, 5, 1)));
    }
}
