//! What one lookup for an unrecorded create's source makes of the database's sources, listed
//! newest first. The lookups of one database and token share the listing (see
//! [`crate::chroma::shared`]); each reads it as if it listed alone.

use super::payload::NaturalKey;
use crate::chroma::shared::Reader;
use crate::chroma::wire::ListedSource;
use crate::kernel::connections::Endpoint;
use std::ops::ControlFlow;

/// The listing a lookup reads: an endpoint (URL and token) and a database.
pub(crate) type Listing = (Endpoint, String);

/// Looks for the source with natural key `key` created no earlier than `since` (the mark, less
/// the skew allowance).
pub(crate) struct SourceLookup {
    pub key: NaturalKey,
    pub since: jiff::Timestamp,
}

impl SourceLookup {
    /// A source with no creation time may be recent: it is not ruled out.
    fn recent(&self, source: &ListedSource) -> bool {
        source.created_at.is_none_or(|c| c >= self.since)
    }

    fn ours(&self, source: &ListedSource) -> bool {
        self.recent(source) && NaturalKey::of_listed(source).as_ref() == Some(&self.key)
    }
}

impl Reader for SourceLookup {
    type Item = ListedSource;
    type Answer = Option<String>;

    /// The newest of ours is the answer. A page that reaches past `since` without one ends the
    /// lookup: a lookup is one page in the usual case, not every recent page.
    fn read(&mut self, page: &[ListedSource]) -> ControlFlow<Option<String>> {
        if let Some(found) = page.iter().find(|s| self.ours(s)) {
            return ControlFlow::Break(Some(found.id.clone()));
        }
        match page.last() {
            Some(oldest) if self.recent(oldest) => ControlFlow::Continue(()),
            _ => ControlFlow::Break(None),
        }
    }

    fn end(self) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chroma::wire::ListedGithub;

    const MARK: &str = "2026-01-01T12:00:00Z";

    fn lookup(repository: &str) -> SourceLookup {
        SourceLookup {
            key: NaturalKey::Github {
                repository: repository.into(),
            },
            since: MARK.parse().unwrap(),
        }
    }

    /// A GitHub source of `repository`, created `minutes` after the mark (before it if
    /// negative), or at an unknown time.
    fn listed(id: &str, repository: &str, minutes: Option<i64>) -> ListedSource {
        let mark: jiff::Timestamp = MARK.parse().unwrap();
        ListedSource {
            id: id.into(),
            created_at: minutes.map(|m| mark + jiff::SignedDuration::from_mins(m)),
            github: Some(ListedGithub {
                repository: repository.into(),
            }),
            web_scrape: None,
            s3: None,
        }
    }

    #[test]
    fn the_newest_of_ours_on_the_page_is_the_answer() {
        let page = [
            listed("other", "acme/other", Some(3)),
            listed("newer", "acme/docs", Some(2)),
            listed("older", "acme/docs", Some(1)),
        ];
        assert_eq!(
            lookup("acme/docs").read(&page),
            ControlFlow::Break(Some("newer".into()))
        );
    }

    #[test]
    fn a_source_from_before_the_mark_is_not_ours_and_ends_the_reading() {
        let page = [
            listed("other", "acme/other", Some(1)),
            listed("before", "acme/docs", Some(-1)),
        ];
        assert_eq!(lookup("acme/docs").read(&page), ControlFlow::Break(None));
    }

    #[test]
    fn the_skew_allowance_is_the_callers_since() {
        // `since` is the mark less the allowance; a source between the two is ours.
        let page = [listed("skewed", "acme/docs", Some(-4))];
        let mut early = lookup("acme/docs");
        early.since -= jiff::SignedDuration::from_mins(5);
        assert_eq!(early.read(&page), ControlFlow::Break(Some("skewed".into())));
    }

    #[test]
    fn a_page_of_recent_others_reads_on_and_the_end_of_the_listing_finds_nothing() {
        let page = [listed("a", "acme/a", Some(2)), listed("b", "acme/b", None)];
        let mut lookup = lookup("acme/docs");
        assert_eq!(lookup.read(&page), ControlFlow::Continue(()));
        assert_eq!(lookup.end(), None);
    }

    #[test]
    fn a_source_with_no_creation_time_may_be_ours() {
        let page = [listed("untimed", "acme/docs", None)];
        assert_eq!(
            lookup("acme/docs").read(&page),
            ControlFlow::Break(Some("untimed".into()))
        );
    }

    #[test]
    fn an_empty_page_ends_the_reading() {
        assert_eq!(lookup("acme/docs").read(&[]), ControlFlow::Break(None));
    }
}
