//! Stop sequences over streamed text.
//!
//! Exists because a caller's stop strings (OpenAI's `stop`) may span
//! several tokens: text is handed on only once it can no longer turn into
//! a stop sequence, and generation ends at the first one, which is never
//! shown.

/// Most stop sequences one request may give (OpenAI's limit).
pub const MAX_STOPS: usize = 4;
/// Longest stop sequence, bytes.
pub const MAX_STOP_LEN: usize = 64;

/// Filters streamed text through a set of stop sequences.
#[derive(Clone, Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    /// Everything generated so far.
    text: String,
    /// Bytes of `text` already handed on.
    emitted: usize,
    /// Where the first stop sequence begins, once seen.
    hit: Option<usize>,
}

impl StopFilter {
    /// A filter for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> StopFilter {
        StopFilter {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..StopFilter::default()
        }
    }

    /// Adds a generated piece; returns the text that may now be shown
    /// (possibly empty) and whether a stop sequence ended generation.
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        if self.hit.is_some() {
            return (String::new(), true);
        }
        let from = self.emitted;
        self.text.push_str(piece);
        // A stop sequence can only begin in text not yet shown.
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min();
        if let Some(at) = hit {
            self.hit = Some(at);
            let out = self.text[from..at].to_owned();
            self.emitted = at;
            return (out, true);
        }
        // Hold back the longest tail that could still grow into a stop.
        let held = self
            .stops
            .iter()
            .map(|s| longest_prefix_suffix(&self.text[from..], s))
            .max()
            .unwrap_or(0);
        let until = self.text.len() - held;
        let out = self.text[from..until].to_owned();
        self.emitted = until;
        (out, false)
    }

    /// The text held back at the end of generation (it never became a
    /// stop sequence).
    pub fn finish(&mut self) -> String {
        if self.hit.is_some() {
            return String::new();
        }
        let out = self.text[self.emitted..].to_owned();
        self.emitted = self.text.len();
        out
    }

    /// The whole answer: everything before the first stop sequence.
    pub fn answer(&self) -> &str {
        &self.text[..self.hit.unwrap_or(self.text.len())]
    }

    /// Whether a stop sequence ended generation.
    pub fn stopped(&self) -> bool {
        self.hit.is_some()
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of
/// `stop` (cut on character boundaries).
fn longest_prefix_suffix(text: &str, stop: &str) -> usize {
    (1..stop.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n)
                && stop.is_char_boundary(n)
                && text.ends_with(&stop[..n])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| (*s).to_owned()).collect();
        let mut f = StopFilter::new(&stops);
        let mut shown = String::new();
        let mut stopped = false;
        for p in pieces {
            let (out, stop) = f.push(p);
            shown.push_str(&out);
            if stop {
                stopped = true;
                break;
            }
        }
        shown.push_str(&f.finish());
        (shown, f.answer().to_owned(), stopped)
    }

    #[test]
    fn a_stop_across_pieces_is_never_shown() {
        let (shown, answer, stopped) = run(&["\nUser:"], &["Paris", ".\n", "Us", "er: hi"]);
        assert_eq!(
            (shown.as_str(), answer.as_str(), stopped),
            ("Paris.", "Paris.", true)
        );
    }

    #[test]
    fn held_text_is_released_when_it_is_no_stop() {
        let (shown, answer, stopped) = run(&["END"], &["It is E", "N", "ough"]);
        assert_eq!(
            (shown.as_str(), answer.as_str(), stopped),
            ("It is ENough", "It is ENough", false)
        );
    }

    #[test]
    fn the_earliest_of_several_stops_wins_and_no_stops_pass_everything() {
        let (shown, _, stopped) = run(&["c", "b"], &["abcd"]);
        assert_eq!((shown.as_str(), stopped), ("a", true));
        let (shown, _, stopped) = run(&[], &["é", "t", "é"]);
        assert_eq!((shown.as_str(), stopped), ("été", false));
        let (shown, _, _) = run(&["éa"], &["té", "b"]);
        assert_eq!(shown, "téb");
    }
}
