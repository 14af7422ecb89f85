//! What the source checks of the authority's files: that a unified file is the one asked for,
//! and what the election catalogue says of the codes given.

use super::TsePaths;
use crate::feed::FeedError;
use crate::feed::tse::catalogue::Catalogue;
use crate::feed::tse::unified;
use crate::fetch::{Fetched, Fetcher, Source};
use crate::model::{Office, Race};

/// Parse a unified file into the race of `office` of the city `ibge`, checking that it is the
/// file asked for: its city, its round, its office.
pub(crate) fn race_of(
    bytes: &[u8],
    name: &str,
    code: &str,
    ibge: u32,
    office: Office,
    round: u8,
) -> Result<Race, FeedError> {
    let u = unified::parse_validated(bytes, name)?;
    if !u.scope_code.is_empty()
        && u.scope_code.trim_start_matches('0') != code.trim_start_matches('0')
    {
        return Err(FeedError::invalid(
            name,
            "cdabr",
            format!("the file is of municipality {}, not {code}", u.scope_code),
        ));
    }
    if u.round != round {
        return Err(FeedError::invalid(
            name,
            "t",
            format!("round {} in the file of round {round}", u.round),
        ));
    }
    u.race(ibge, office).ok_or_else(|| {
        FeedError::invalid(
            name,
            "carg",
            format!("no office {} in the file", office.tse_code()),
        )
    })
}

/// Read the catalogue, if it can be had: warn when the election code is not in it, and say what
/// its second round is when none was given. Its absence is no reason not to start.
pub(super) async fn check_catalogue(
    fetcher: &Fetcher,
    first: &TsePaths,
    second: Option<&TsePaths>,
) {
    let url = first.catalogue();
    let mut source = Source::new(&url);
    let bytes = match fetcher.fetch(&mut source).await {
        Ok(Fetched::Modified(b)) => b,
        Ok(_) => {
            tracing::warn!(%url, "no election catalogue; the election codes are taken as given");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the election catalogue; the election codes are taken as given");
            return;
        }
    };
    let catalogue = match Catalogue::parse(&bytes, &url) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "the election catalogue is unreadable; the election codes are taken as given");
            return;
        }
    };
    match catalogue.election(first.election()) {
        None => tracing::warn!(
            election = first.election(),
            "the election is not in the catalogue"
        ),
        Some(e) => {
            tracing::info!(election = %e.code, name = %e.name, round2 = ?e.round2, "election found in the catalogue");
            if second.is_none()
                && let Some(r2) = &e.round2
            {
                tracing::info!(
                    round2 = %r2,
                    "the catalogue lists a second round: pass --election-round2 {r2} to follow it"
                );
            }
        }
    }
}
