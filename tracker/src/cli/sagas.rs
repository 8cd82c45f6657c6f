//! `saga-tracker sagas search|show|export`: the REST API for a person at a terminal.
//!
//! Every filter is a flag named after the API parameter (`--saga-type` for `sagaType`) and is
//! sent as typed, so the server's parser — the one the API, the UI and the export share —
//! judges it, and its 400 comes back naming each bad parameter. The command line checks only
//! what is its own (`--meta` needs a `=`, `--since` an age).
//!
//! The answers are read into the API's own types ([`crate::api::sagas`]), and durations,
//! instants and stuck reasons are worded by [`crate::humanize`], as in the Saga Explorer.
//! `--json`/`--ndjson` print what the server sent, untouched, for scripts.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anstyle::AnsiColor;
use anyhow::{bail, Context as _};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::api::{ensure_ok, ApiClient, ApiFailure};
use super::output::status_color;
use super::{ApiArgs, Output};
use crate::api::sagas::{EventList, EventView, SagaDetail, SagaSummary, StepView};
use crate::humanize;

/// `println!` that returns the error instead of panicking, so `sagas search | head` ends
/// quietly when `head` has read enough (see [`super::exit_on_error`]).
macro_rules! say {
    () => {
        writeln!(std::io::stdout())?
    };
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)?
    };
}

const SEARCH_EXAMPLES: &str = "\
Examples:
  saga-tracker sagas search --status FAILED --since 1h
  saga-tracker sagas search --saga-type ORDER_CREATION --status FAILED --status COMPENSATED
  saga-tracker sagas search --business-key 8812
  saga-tracker sagas search --stuck --sort updatedAt
  saga-tracker sagas search --meta region=eu --min-duration-ms 5000 --all
  saga-tracker sagas search --failed-step PAYMENT_CHARGED --ndjson | jq -r .sagaId";

const SHOW_EXAMPLES: &str = "\
Examples:
  saga-tracker sagas show order-8812
  saga-tracker sagas show order-8812 --no-events
  saga-tracker sagas show order-8812 --json | jq '.steps[] | {step, durationMs}'";

const EXPORT_EXAMPLES: &str = "\
Examples:
  saga-tracker sagas export --status FAILED --since 1d --output failed.ndjson
  saga-tracker sagas export --saga-type ORDER_CREATION --format csv -o orders.csv
  saga-tracker sagas export --stuck --output - | jq -r .sagaId";

#[derive(Debug, clap::Subcommand)]
pub enum SagasCommand {
    /// Search sagas with the API's filters: an aligned table, or JSON for scripts.
    #[command(after_help = SEARCH_EXAMPLES)]
    Search(Box<SearchArgs>),
    /// One saga: facts, stuck verdict, failure and compensation, a to-scale step timeline
    /// and its events.
    #[command(after_help = SHOW_EXAMPLES)]
    Show(ShowArgs),
    /// Write every saga a search matches to a file (NDJSON or CSV), with a progress bar.
    #[command(after_help = EXPORT_EXAMPLES)]
    Export(Box<ExportArgs>),
}

/// The filters of `GET /api/v1/sagas` (and of the export), named like the API's
/// parameters in kebab-case. Values are passed through as given.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Filters (combined with AND, checked by the tracker)")]
pub struct Filters {
    /// Exact saga type (`sagaType`), e.g. ORDER_CREATION.
    #[arg(long, value_name = "TYPE")]
    pub saga_type: Option<String>,
    /// In any of these statuses (`status`; repeat the flag or separate with commas):
    /// STARTED, IN_PROGRESS, COMPLETED, FAILED, COMPENSATING, COMPENSATED.
    #[arg(long, value_name = "STATUS")]
    pub status: Vec<String>,
    /// Exact business key (`businessKey`), e.g. an order number.
    #[arg(long, value_name = "KEY")]
    pub business_key: Option<String>,
    /// Exact W3C trace id, 32 hex digits (`traceId`).
    #[arg(long, value_name = "HEX")]
    pub trace_id: Option<String>,
    /// The saga has at least one event for this step (`step`).
    #[arg(long, value_name = "STEP")]
    pub step: Option<String>,
    /// The step that failed the saga (`failedStep`).
    #[arg(long, value_name = "STEP")]
    pub failed_step: Option<String>,
    /// This service emitted at least one of the saga's events (`service`).
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// Only sagas stuck now (`--stuck`, `--stuck true`) or only the others (`--stuck false`).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub stuck: Option<String>,
    /// Only sagas stuck now for this reason (`stuckReason`): no_progress,
    /// failed_not_compensated, compensation_not_finished.
    #[arg(long, value_name = "REASON")]
    pub stuck_reason: Option<String>,
    /// Started at or after this RFC 3339 instant (`startedAfter`).
    #[arg(long, value_name = "TIME")]
    pub started_after: Option<String>,
    /// Started before this RFC 3339 instant (`startedBefore`).
    #[arg(long, value_name = "TIME")]
    pub started_before: Option<String>,
    /// Last event at or after this RFC 3339 instant (`updatedAfter`).
    #[arg(long, value_name = "TIME")]
    pub updated_after: Option<String>,
    /// Last event before this RFC 3339 instant (`updatedBefore`).
    #[arg(long, value_name = "TIME")]
    pub updated_before: Option<String>,
    /// Started within this long before now: 90s, 30m, 1h, 2d, 1w, 1h30m (sent as
    /// `startedAfter`).
    #[arg(long, value_name = "AGE", value_parser = parse_age, conflicts_with = "started_after")]
    pub since: Option<chrono::Duration>,
    /// Finished sagas that took at least this many milliseconds (`minDurationMs`).
    #[arg(long, value_name = "MS")]
    pub min_duration_ms: Option<String>,
    /// Metadata holds KEY with VALUE (`meta.KEY=VALUE`; repeatable, all must hold).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    pub meta: Vec<(String, String)>,
    /// Listing order, newest first: startedAt (default) or updatedAt (`sort`).
    #[arg(long, value_name = "FIELD")]
    pub sort: Option<String>,
}

impl Filters {
    /// The query pairs, in the API's names; `--since` resolved against `now`.
    pub fn query(&self, now: DateTime<Utc>) -> Vec<(String, String)> {
        let mut q: Vec<(String, String)> = Vec::new();
        let mut one = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                q.push((name.to_owned(), v.clone()));
            }
        };
        one("sagaType", &self.saga_type);
        one("businessKey", &self.business_key);
        one("traceId", &self.trace_id);
        one("step", &self.step);
        one("failedStep", &self.failed_step);
        one("service", &self.service);
        one("stuck", &self.stuck);
        one("stuckReason", &self.stuck_reason);
        one("startedAfter", &self.started_after);
        one(
            "startedAfter",
            &self
                .since
                .map(|age| (now - age).to_rfc3339_opts(SecondsFormat::Millis, true)),
        );
        one("startedBefore", &self.started_before);
        one("updatedAfter", &self.updated_after);
        one("updatedBefore", &self.updated_before);
        one("minDurationMs", &self.min_duration_ms);
        one("sort", &self.sort);
        for s in &self.status {
            q.push(("status".to_owned(), s.clone()));
        }
        for (k, v) in &self.meta {
            q.push((format!("meta.{k}"), v.clone()));
        }
        q
    }

    /// True when the statistics endpoint counts exactly these filters (it takes only
    /// `sagaType`, `service` and the start window), so its `total` is the export's size.
    fn counted_by_stats(&self) -> bool {
        self.status.is_empty()
            && self.business_key.is_none()
            && self.trace_id.is_none()
            && self.step.is_none()
            && self.failed_step.is_none()
            && self.stuck.is_none()
            && self.stuck_reason.is_none()
            && self.updated_after.is_none()
            && self.updated_before.is_none()
            && self.min_duration_ms.is_none()
            && self.meta.is_empty()
    }
}

/// `--meta region=eu` → `("region", "eu")`; the key is everything before the first `=`.
fn parse_meta(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, e.g. region=eu; got {s:?}")),
    }
}

/// An age such as `90s`, `30m`, `1h`, `2d`, `1w` or `1h30m`.
fn parse_age(s: &str) -> Result<chrono::Duration, String> {
    let bad = || format!("expected an age such as 90s, 30m, 1h, 2d, 1w or 1h30m; got {s:?}");
    let mut total = chrono::Duration::zero();
    let mut digits = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        let part = match c {
            's' => chrono::Duration::try_seconds(n),
            'm' => chrono::Duration::try_minutes(n),
            'h' => chrono::Duration::try_hours(n),
            'd' => chrono::Duration::try_days(n),
            'w' => chrono::Duration::try_weeks(n),
            _ => None,
        }
        .ok_or_else(bad)?;
        total = total.checked_add(&part).ok_or_else(bad)?;
    }
    if !digits.is_empty() || total <= chrono::Duration::zero() {
        return Err(bad());
    }
    Ok(total)
}

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub filters: Filters,
    /// Page size (`limit`, 1–500; the tracker's default is 50).
    #[arg(long, value_name = "N", help_heading = "Pages")]
    pub limit: Option<String>,
    /// Continue from this position: the `--cursor` the previous page's footer printed
    /// (`nextCursor`), with the same filters.
    #[arg(long, value_name = "CURSOR", help_heading = "Pages")]
    pub cursor: Option<String>,
    /// Follow the cursors page after page, up to --max sagas.
    #[arg(long, help_heading = "Pages")]
    pub all: bool,
    /// With --all: stop after this many sagas (the footer then says how to continue).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10_000,
        help_heading = "Pages"
    )]
    pub max: usize,
    /// Print the API's page document as JSON (with --all: every page's items in one
    /// document, `nextCursor` the last page's).
    #[arg(long, conflicts_with = "ndjson", help_heading = "Output")]
    pub json: bool,
    /// Print one saga per line as JSON.
    #[arg(long, help_heading = "Output")]
    pub ndjson: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The saga id, as the emitters sent it (quote it if it has spaces).
    pub saga_id: String,
    /// Print the API's detail document with its events (`events`) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Leave out the events table (the timeline is always drawn).
    #[arg(long)]
    pub no_events: bool,
    /// Columns to draw the timeline across (default: the terminal's width, else `COLUMNS`,
    /// else 100).
    #[arg(long, value_name = "COLUMNS")]
    pub width: Option<usize>,
}

/// What `sagas export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One search result (JSON) per line.
    Ndjson,
    /// A header row, then one row per saga (the columns are in docs/api.md).
    Csv,
}

impl ExportFormat {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ndjson => "ndjson",
            Self::Csv => "csv",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub filters: Filters,
    /// ndjson or csv.
    #[arg(long, value_enum, default_value_t = ExportFormat::Ndjson)]
    pub format: ExportFormat,
    /// The file to write, `-` for stdout. It appears only once the export is complete
    /// (written beside it under a temporary name, then renamed).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
}

pub async fn run(command: SagasCommand, api: ApiArgs, out: Output) -> anyhow::Result<()> {
    let client = ApiClient::new(&api)?;
    match command {
        SagasCommand::Search(args) => search(&client, *args, out).await,
        SagasCommand::Show(args) => show(&client, args, out).await,
        SagasCommand::Export(args) => export(&client, *args, out).await,
    }
}

// ---------------------------------------------------------------------------------------
// search
// ---------------------------------------------------------------------------------------

/// The largest page the API serves.
const MAX_PAGE: usize = 500;

async fn search(client: &ApiClient, args: SearchArgs, out: Output) -> anyhow::Result<()> {
    let now = Utc::now();
    let filters = args.filters.query(now);
    let mut items: Vec<Value> = Vec::new();
    let mut cursor = args.cursor.clone();
    let mut pages = 0usize;
    let mut single: Option<Value> = None;
    loop {
        let mut q = filters.clone();
        let limit = if args.all {
            // Never past --max, so the last cursor is the position after the last row shown.
            let want = args
                .limit
                .as_deref()
                .map_or(Ok(MAX_PAGE), str::parse::<usize>);
            match want {
                Ok(n) => Some(n.min(args.max - items.len()).max(1).to_string()),
                // Not a number: let the tracker say so.
                Err(_) => args.limit.clone(),
            }
        } else {
            args.limit.clone()
        };
        if let Some(l) = limit {
            q.push(("limit".into(), l));
        }
        if let Some(c) = &cursor {
            q.push(("cursor".into(), c.clone()));
        }
        let page: Value = client
            .get_url_json(client.url(&["api", "v1", "sagas"], &q)?)
            .await?;
        pages += 1;
        let page_items = page
            .get("items")
            .and_then(Value::as_array)
            .context("the tracker's page has no `items`")?;
        items.extend(page_items.iter().cloned());
        cursor = page
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if pages == 1 {
            single = Some(page);
        }
        if !args.all || cursor.is_none() || items.len() >= args.max {
            break;
        }
    }

    if args.json {
        let doc = match single {
            Some(page) if pages == 1 => page,
            _ => serde_json::json!({ "items": items, "nextCursor": cursor }),
        };
        say!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    if args.ndjson {
        let mut w = std::io::BufWriter::new(std::io::stdout().lock());
        for item in &items {
            serde_json::to_writer(&mut w, item).map_err(std::io::Error::from)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        return Ok(());
    }
    if items.is_empty() {
        say!("No saga matches these filters.");
        return Ok(());
    }
    let sagas = items
        .into_iter()
        .map(serde_json::from_value::<SagaSummary>)
        .collect::<Result<Vec<_>, _>>()
        .context("the tracker's page does not hold the sagas expected")?;
    print_table(search_table(&sagas, now, out))?;
    say!();
    say!("{}", out.dim(footer(sagas.len(), cursor.as_deref(), &args)));
    Ok(())
}

fn search_table(sagas: &[SagaSummary], now: DateTime<Utc>, out: Output) -> comfy_table::Table {
    let mut t = out.table(&[
        "SAGA ID",
        "TYPE",
        "STATUS",
        "BUSINESS KEY",
        "STARTED (UTC)",
        "DURATION",
        "FAILED STEP",
        "STUCK",
    ]);
    for s in sagas {
        let duration = match s.duration_ms {
            Some(ms) => out.cell(humanize::duration(ms), None),
            None => out.cell(
                format!(
                    "running {}",
                    humanize::duration((now - s.started_at).num_milliseconds())
                ),
                Some(AnsiColor::Blue),
            ),
        };
        let stuck = match &s.stuck {
            Some(st) => out.cell(
                format!(
                    "{}, {}",
                    humanize::stuck_reason_text(&st.reason),
                    humanize::ago(st.since, now)
                ),
                Some(AnsiColor::Red),
            ),
            None => out.cell("", None),
        };
        t.add_row(vec![
            out.cell(&s.saga_id, None),
            out.cell(&s.saga_type, None),
            out.status_cell(&s.status),
            out.cell(s.business_key.as_deref().unwrap_or(""), None),
            out.cell(s.started_at.format("%Y-%m-%d %H:%M:%S"), None),
            duration,
            out.cell(
                s.failed_step.as_deref().unwrap_or(""),
                s.failed_step.as_ref().map(|_| AnsiColor::Red),
            ),
            stuck,
        ]);
    }
    t
}

fn footer(n: usize, next: Option<&str>, args: &SearchArgs) -> String {
    let count = if n == 1 {
        "1 saga.".to_owned()
    } else {
        format!("{n} sagas.")
    };
    match next {
        None => count,
        Some(c) if args.all => format!(
            "{count} Stopped at --max {}; more match: add `--cursor {c}` to continue.",
            args.max
        ),
        Some(c) => format!(
            "{count} More match: add `--cursor {c}` for the next page, or `--all` to follow \
             every page."
        ),
    }
}

// ---------------------------------------------------------------------------------------
// show
// ---------------------------------------------------------------------------------------

async fn show(client: &ApiClient, args: ShowArgs, out: Output) -> anyhow::Result<()> {
    let id = args.saga_id.as_str();
    if id == "export" {
        // `/api/v1/sagas/export` is the export endpoint: it would stream every saga.
        bail!(
            "a saga whose id is `export` cannot be fetched by id (that path is the export); \
             find it with `sagas search`"
        );
    }
    let detail_url = client.url(&["api", "v1", "sagas", id], &[])?;
    let events_url = client.url(&["api", "v1", "sagas", id, "events"], &[])?;
    let detail: Value = not_found_as(client.get_url_json(detail_url).await, id)?;
    let events: Value = not_found_as(client.get_url_json(events_url).await, id)?;
    if args.json {
        let mut doc = detail;
        if let Some(obj) = doc.as_object_mut() {
            obj.insert(
                "events".into(),
                events.get("items").cloned().unwrap_or(Value::Null),
            );
        }
        say!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let detail: SagaDetail =
        serde_json::from_value(detail).context("the tracker's saga is not the shape expected")?;
    let events: EventList = serde_json::from_value(events)
        .context("the tracker's events are not the shape expected")?;
    let now = Utc::now();
    let width = out.width(args.width);
    let late_from = events
        .items
        .len()
        .saturating_sub(detail.summary.late_event_count.max(0) as usize);
    write!(std::io::stdout(), "{}", header(&detail, now, out))?;
    say!();
    say!("{}", out.bold("Timeline"));
    for line in timeline(&detail, &events.items, late_from, width, out) {
        say!("{line}");
    }
    if !args.no_events {
        say!();
        say!("{} {}", out.bold("Events"), out.dim("in saga order"));
        print_table(events_table(&events.items, late_from, out))?;
        if events.items.len() > MAX_EVENT_ROWS {
            say!(
                "{}",
                out.dim(format!(
                    "{} more events are not shown; `--json` has them all.",
                    events.items.len() - MAX_EVENT_ROWS
                ))
            );
        }
    }
    Ok(())
}

/// A table flush with the left margin, without the padding comfy-table leaves at line ends
/// (so `grep ^id` and copy-paste work).
fn print_table(mut t: comfy_table::Table) -> std::io::Result<()> {
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    for line in t.to_string().lines() {
        say!("{}", line.trim_end());
    }
    Ok(())
}

/// A 404 becomes "no saga `id`"; everything else passes through.
fn not_found_as<T>(r: anyhow::Result<T>, id: &str) -> anyhow::Result<T> {
    r.map_err(|e| match e.downcast_ref::<ApiFailure>() {
        Some(f) if f.status == reqwest::StatusCode::NOT_FOUND => anyhow::anyhow!(
            "no saga `{id}` (no event with this saga id is stored; it may still be on its way, \
             or retention removed it)"
        ),
        _ => e,
    })
}

/// The facts, the stuck banner and the failure block, worded as the saga page words them.
fn header(d: &SagaDetail, now: DateTime<Utc>, out: Output) -> String {
    let s = &d.summary;
    let mut o = String::new();
    let mut fact =
        |k: &str, v: String| o.push_str(&format!("  {}{v}\n", out.dim(format!("{k:<14}"))));
    let mut facts: Vec<(&str, String)> = vec![("Type", s.saga_type.clone())];
    if let Some(k) = &s.business_key {
        facts.push(("Business key", k.clone()));
    }
    facts.push(("Started", humanize::short_time(s.started_at)));
    match s.ended_at {
        Some(t) => facts.push(("Ended", humanize::short_time(t))),
        None => facts.push(("Last activity", humanize::short_time(s.updated_at))),
    }
    facts.push((
        "Duration",
        match s.duration_ms {
            Some(ms) => humanize::duration(ms),
            None => out.blue(format!(
                "running for {}",
                humanize::duration((now - s.started_at).num_milliseconds())
            )),
        },
    ));
    facts.push(("Current step", s.current_step.clone()));
    facts.push((
        "Events",
        if s.late_event_count > 0 {
            format!(
                "{} ({})",
                s.event_count,
                out.yellow(format!("{} late", s.late_event_count))
            )
        } else {
            s.event_count.to_string()
        },
    ));
    facts.push(("Services", s.services.join(", ")));
    if !d.trace_ids.is_empty() {
        facts.push(("Trace ids", d.trace_ids.join(" ")));
    }
    if !d.tracker_trace_ids.is_empty() {
        facts.push(("Tracker traces", d.tracker_trace_ids.join(" ")));
    }
    if s.metadata.as_object().is_some_and(|m| !m.is_empty()) {
        facts.push(("Metadata", s.metadata.to_string()));
    }
    let mut head = format!(
        "{} {}  {}\n",
        out.dim("Saga"),
        out.bold(&s.saga_id),
        out.status(&s.status)
    );
    for (k, v) in facts {
        fact(k, v);
    }
    head.push_str(&o);
    if let Some(st) = &s.stuck {
        head.push_str(&format!(
            "\n{} since {} ({}). {}\n",
            out.paint(
                AnsiColor::Red.on_default().bold(),
                format!("Stuck: {}", humanize::stuck_reason_text(&st.reason))
            ),
            humanize::short_time(st.since),
            humanize::ago(st.since, now),
            humanize::stuck_explanation(&st.reason, st.threshold_secs)
        ));
    }
    if let Some(f) = &s.failed_step {
        let view = d.steps.iter().find(|st| &st.step == f);
        let mut line = format!(
            "\n{}",
            out.paint(
                AnsiColor::Red.on_default().bold(),
                format!("Failed at step {f}")
            )
        );
        if let Some(v) = view {
            line.push_str(&format!(" ({})", v.service));
            if let Some(t) = v.ended_at {
                line.push_str(&format!(" at {}", humanize::short_time(t)));
            }
        }
        head.push_str(&line);
        head.push('\n');
        if let Some(e) = &s.failure {
            head.push_str(&format!("  {}  {}\n", out.red(&e.code), e.message));
        }
        if let Some(c) = &d.compensation {
            let what = match (&c.ended_at, c.duration_ms) {
                (Some(_), Some(ms)) => {
                    out.yellow(format!("Compensated in {}", humanize::duration(ms)))
                }
                _ if s.status == "COMPENSATING" => out.yellow("Compensation running"),
                _ => out.red("Compensation did not finish"),
            };
            let steps: Vec<&str> = c.steps.iter().map(|x| x.step.as_str()).collect();
            head.push_str(&format!("  {what}: {}\n", steps.join(", ")));
            if !c.failed_steps.is_empty() {
                head.push_str(&format!(
                    "  {} {}\n",
                    out.red("failed to compensate:"),
                    c.failed_steps.join(", ")
                ));
            }
        }
    }
    head
}

/// Events shown at most; a saga is a handful, this bounds a runaway emitter's.
const MAX_EVENT_ROWS: usize = 500;

fn events_table(events: &[EventView], late_from: usize, out: Output) -> comfy_table::Table {
    let mut t = out.table(&[
        "#",
        "OCCURRED (UTC)",
        "STEP",
        "STEP STATUS",
        "SAGA STATUS",
        "SERVICE",
        "ERROR",
        "KAFKA",
        "LAG",
        "EVENT ID",
    ]);
    for (i, e) in events.iter().enumerate().take(MAX_EVENT_ROWS) {
        let late = i >= late_from;
        t.add_row(vec![
            out.cell(i + 1, None),
            out.cell(humanize::short_time(e.occurred_at), None),
            if late {
                out.cell(format!("{} (late)", e.step), Some(AnsiColor::Yellow))
            } else {
                out.cell(&e.step, None)
            },
            out.status_cell(&e.step_status),
            match &e.saga_status {
                Some(s) => out.status_cell(s),
                None => out.cell("", None),
            },
            out.cell(&e.service, None),
            match &e.error {
                Some(err) => out.cell(
                    format!("{} {}", err.code, err.message),
                    Some(AnsiColor::Red),
                ),
                None => out.cell("", None),
            },
            out.cell(
                e.kafka.as_ref().map_or_else(
                    || "—".to_owned(),
                    |k| format!("{}/{}@{}", k.topic, k.partition, k.offset),
                ),
                None,
            ),
            out.cell(
                humanize::duration((e.ingested_at - e.occurred_at).num_milliseconds()),
                None,
            ),
            out.cell(&e.event_id, None),
        ]);
    }
    t
}

// ---------------------------------------------------------------------------------------
// The terminal timeline
// ---------------------------------------------------------------------------------------

/// The bar of a step's forward run that ended (succeeded or failed).
const DONE: char = '█';
/// The bar of a step still running (to the saga's last activity).
const OPEN: char = '░';
/// The bar of a step's compensation, on the `↺` row under the step.
const COMP: char = '▒';
/// A late event (arrived after the saga had ended), on its step's row.
const LATE: char = '◆';
/// Narrowest bar track drawn, however narrow the terminal.
const MIN_TRACK: usize = 10;

/// Maps instants onto the cells of a track: `[t0, t0 + span]` across `cells` columns.
#[derive(Debug, Clone, Copy)]
struct Track {
    t0: DateTime<Utc>,
    span_ms: f64,
    cells: usize,
}

impl Track {
    fn pos(&self, t: DateTime<Utc>) -> f64 {
        let ms = (t - self.t0).num_microseconds().unwrap_or(0) as f64 / 1000.0;
        (ms / self.span_ms).clamp(0.0, 1.0) * self.cells as f64
    }

    /// The cells `[from, to)` a bar from `start` to `end` covers: at least one, so a step
    /// that took no time still shows where it happened, and never past the track.
    fn range(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> (usize, usize) {
        let last = self.cells.saturating_sub(1);
        let from = (self.pos(start).floor() as usize).min(last);
        let to = (self.pos(end.max(start)).ceil() as usize).clamp(from + 1, self.cells);
        (from, to)
    }

    /// The cell of one instant (a late-event marker).
    fn cell(&self, t: DateTime<Utc>) -> usize {
        (self.pos(t).floor() as usize).min(self.cells.saturating_sub(1))
    }
}

/// One track's cells, each a glyph and its colour, painted run by run.
struct Cells(Vec<(char, Option<AnsiColor>)>);

impl Cells {
    fn new(n: usize) -> Self {
        Self(vec![(' ', None); n])
    }

    fn fill(&mut self, (from, to): (usize, usize), glyph: char, color: Option<AnsiColor>) {
        for c in &mut self.0[from..to] {
            *c = (glyph, color);
        }
    }

    fn set(&mut self, at: usize, glyph: char, color: Option<AnsiColor>) {
        if let Some(c) = self.0.get_mut(at) {
            *c = (glyph, color);
        }
    }

    fn render(&self, out: Output) -> String {
        let mut s = String::new();
        let mut run = String::new();
        let mut color = None;
        for (glyph, c) in &self.0 {
            if *c != color && !run.is_empty() {
                s.push_str(&paint(out, color, &run));
                run.clear();
            }
            color = *c;
            run.push(*glyph);
        }
        s.push_str(&paint(out, color, &run));
        s
    }
}

fn paint(out: Output, color: Option<AnsiColor>, text: &str) -> String {
    match color {
        Some(c) => out.paint(c.on_default(), text),
        None => text.to_owned(),
    }
}

/// `text` cut to `w` characters (with `…`) and padded to `w`.
fn fit(text: &str, w: usize) -> String {
    let n = text.chars().count();
    if n <= w {
        format!("{text}{}", " ".repeat(w - n))
    } else {
        let mut t: String = text.chars().take(w.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// `text` right-aligned in `w` characters.
fn right(text: &str, w: usize) -> String {
    let n = text.chars().count();
    format!("{}{text}", " ".repeat(w.saturating_sub(n)))
}

/// How the forward run of a step ended, as the saga page colours it.
fn outcome(st: &StepView) -> &str {
    if st.error.is_some() {
        "FAILED"
    } else if st.ended_at.is_some() {
        "SUCCEEDED"
    } else {
        st.status.as_str()
    }
}

/// The step timeline as terminal lines of `width` columns (wider only when `width` leaves
/// less than [`MIN_TRACK`] cells for the bars): a header with the time axis, then one row
/// per step — service, status, start offset, duration, and its bar to scale — and under a
/// compensated step a `↺` row with its compensation's bar. Late events are `◆` on their
/// step's row.
fn timeline(
    d: &SagaDetail,
    events: &[EventView],
    late_from: usize,
    width: usize,
    out: Output,
) -> Vec<String> {
    const COMP_LABEL: &str = "↺ compensation";
    let s = &d.summary;
    let t0 = s.started_at;
    let t1 = d.last_instant();
    let span_ms = ((t1 - t0).num_microseconds().unwrap_or(0) as f64 / 1000.0).max(1.0);
    let step_w = d
        .steps
        .iter()
        .map(|st| st.step.chars().count())
        .chain([4, COMP_LABEL.chars().count()])
        .max()
        .unwrap_or(4)
        .min(28);
    let svc_w = d
        .steps
        .iter()
        .map(|st| st.service.chars().count())
        .chain([7])
        .max()
        .unwrap_or(7)
        .min(20);
    const STATUS_W: usize = 12;
    const START_W: usize = 9;
    const DUR_W: usize = 10;
    // "  " + step + " " + service + " " + status + " " + start + " " + duration + "  " + track
    let labels = 2 + step_w + 1 + svc_w + 1 + STATUS_W + 1 + START_W + 1 + DUR_W + 2;
    let cells = width.saturating_sub(labels).max(MIN_TRACK);
    let track = Track { t0, span_ms, cells };
    let offset = |t: DateTime<Utc>| format!("+{}", humanize::duration((t - t0).num_milliseconds()));

    let mut lines = Vec::new();
    let end_label = offset(t1);
    let axis = format!(
        "{}{}",
        fit("0", cells.saturating_sub(end_label.chars().count())),
        end_label
    );
    lines.push(out.dim(format!(
        "  {} {} {} {} {}  {}",
        fit("STEP", step_w),
        fit("SERVICE", svc_w),
        fit("STATUS", STATUS_W),
        right("START", START_W),
        right("DURATION", DUR_W),
        fit(&axis, cells)
    )));
    for st in &d.steps {
        let start = st.started_at.unwrap_or(st.first_event_at);
        let outcome = outcome(st);
        let open = st.ended_at.is_none();
        let mut bar = Cells::new(cells);
        bar.fill(
            track.range(start, st.ended_at.unwrap_or(t1)),
            if open { OPEN } else { DONE },
            status_color(outcome),
        );
        for (i, e) in events.iter().enumerate() {
            if i >= late_from && e.step == st.step {
                bar.set(track.cell(e.occurred_at), LATE, Some(AnsiColor::Yellow));
            }
        }
        let dur = match st.duration_ms {
            Some(ms) => humanize::duration(ms),
            None if open => "running".to_owned(),
            None => String::new(),
        };
        let status = fit(&st.status, STATUS_W);
        lines.push(format!(
            "  {} {} {} {} {}  {}",
            fit(&st.step, step_w),
            fit(&st.service, svc_w),
            match status_color(&st.status) {
                Some(c) => out.paint(c.on_default(), status),
                None => status,
            },
            right(&offset(start), START_W),
            right(&dur, DUR_W),
            bar.render(out)
        ));
        if let Some(c) = &st.compensation {
            let cstart = c.started_at.unwrap_or(start);
            let color = if c.failed {
                AnsiColor::Red
            } else {
                AnsiColor::Yellow
            };
            let mut bar = Cells::new(cells);
            bar.fill(
                track.range(cstart, c.ended_at.unwrap_or(t1)),
                COMP,
                Some(color),
            );
            let (state, dur) = match (c.failed, c.ended_at, c.duration_ms) {
                (true, _, _) => ("failed", String::new()),
                (false, Some(_), Some(ms)) => ("compensated", humanize::duration(ms)),
                _ => ("running", "running".to_owned()),
            };
            lines.push(format!(
                "  {} {} {} {} {}  {}",
                fit(COMP_LABEL, step_w),
                fit("", svc_w),
                out.paint(color.on_default(), fit(state, STATUS_W)),
                right(&offset(cstart), START_W),
                right(&dur, DUR_W),
                bar.render(out)
            ));
        }
    }
    lines.push(out.dim(format!(
        "  {DONE} done  {OPEN} running  {COMP} compensation  {LATE} late event   (one column ≈ {})",
        humanize::duration_f(span_ms / cells as f64)
    )));
    lines
}

// ---------------------------------------------------------------------------------------
// export
// ---------------------------------------------------------------------------------------

async fn export(client: &ApiClient, args: ExportArgs, out: Output) -> anyhow::Result<()> {
    let now = Utc::now();
    let mut q = args.filters.query(now);
    q.push(("format".into(), args.format.as_str().into()));
    let url = client.url(&["api", "v1", "sagas", "export"], &q)?;
    let total = if args.filters.counted_by_stats() {
        stats_total(client, &args.filters, now).await
    } else {
        None
    };
    let resp = ensure_ok(client.get_stream(url).await?).await?;

    let to_stdout = args.output.as_os_str() == "-";
    let (mut sink, temp): (Box<dyn std::io::Write>, Option<tempfile::NamedTempFile>) = if to_stdout
    {
        (Box::new(std::io::stdout().lock()), None)
    } else {
        let temp = temp_beside(&args.output)?;
        let file = temp
            .as_file()
            .try_clone()
            .context("opening the temporary file")?;
        (Box::new(std::io::BufWriter::new(file)), Some(temp))
    };
    let bar = out.progress(total, "exporting sagas");
    let started = Instant::now();
    let mut rows = RowCounter::new(args.format);
    let mut bytes = 0u64;
    let mut resp = resp;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let written = args.output.display().to_string();
    loop {
        let chunk = tokio::select! {
            c = resp.chunk() => c,
            _ = &mut interrupted => {
                bar.abandon();
                bail!("interrupted after {} rows; {} was not written", rows.rows(), shown(&written, to_stdout));
            }
        };
        let chunk = match chunk {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                bar.abandon();
                // The server aborts a failed export instead of ending it: never a short file.
                return Err(anyhow::Error::new(e).context(format!(
                    "the export was cut short after {} rows; {} was not written",
                    rows.rows(),
                    shown(&written, to_stdout)
                )));
            }
        };
        rows.feed(&chunk);
        bytes += chunk.len() as u64;
        sink.write_all(&chunk)
            .with_context(|| format!("writing {}", shown(&written, to_stdout)))?;
        bar.set_position(rows.rows());
    }
    sink.flush()
        .with_context(|| format!("writing {}", shown(&written, to_stdout)))?;
    drop(sink);
    if let Some(temp) = temp {
        temp.as_file()
            .sync_all()
            .context("flushing the export to disk")?;
        temp.persist(&args.output)
            .with_context(|| format!("renaming the finished export to {written}"))?;
    }
    bar.finish_and_clear();
    let n = rows.rows();
    eprintln!(
        "Exported {n} {} ({}, {}) to {} in {:.1} s.",
        if n == 1 { "saga" } else { "sagas" },
        args.format.as_str().to_uppercase(),
        size(bytes),
        shown(&written, to_stdout),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn shown(path: &str, stdout: bool) -> String {
    if stdout {
        "stdout".to_owned()
    } else {
        path.to_owned()
    }
}

/// A temporary file in the output's directory, so the final rename stays on one file system.
fn temp_beside(output: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("--output {} names no file", output.display()))?;
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))
}

/// The statistics' `total` for filters it counts exactly, for a bar with an ETA; `None`
/// (a spinner) when it cannot be had.
async fn stats_total(client: &ApiClient, f: &Filters, now: DateTime<Utc>) -> Option<u64> {
    let q: Vec<(String, String)> = f
        .query(now)
        .into_iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "sagaType" | "service" | "startedAfter" | "startedBefore"
            )
        })
        .collect();
    let url = client.url(&["api", "v1", "stats"], &q).ok()?;
    let stats: Value = client.get_url_json(url).await.ok()?;
    stats.get("total")?.as_u64()
}

/// Counts the rows of a streamed export as its bytes go by: lines for NDJSON; for CSV, line
/// ends outside quotes (a failure message may hold a newline), less the header.
#[derive(Debug)]
struct RowCounter {
    format: ExportFormat,
    lines: u64,
    in_quotes: bool,
}

impl RowCounter {
    fn new(format: ExportFormat) -> Self {
        Self {
            format,
            lines: 0,
            in_quotes: false,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match (self.format, b) {
                (ExportFormat::Csv, b'"') => self.in_quotes = !self.in_quotes,
                (_, b'\n') if !self.in_quotes => self.lines += 1,
                _ => {}
            }
        }
    }

    fn rows(&self) -> u64 {
        match self.format {
            ExportFormat::Ndjson => self.lines,
            ExportFormat::Csv => self.lines.saturating_sub(1),
        }
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        0..=1023 => format!("{bytes} B"),
        1024..=1_048_575 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::sagas::{CompensationView, ErrorInfo};

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-01T10:00:00Z")
            .expect("a valid instant")
            .with_timezone(&Utc)
            + chrono::Duration::milliseconds(ms)
    }

    fn plain() -> Output {
        Output {
            color: false,
            progress: false,
        }
    }

    fn step(name: &str, start: i64, end: Option<i64>, status: &str) -> StepView {
        StepView {
            step: name.into(),
            status: status.into(),
            service: "svc".into(),
            started_at: Some(t(start)),
            ended_at: end.map(t),
            duration_ms: end.map(|e| e - start),
            error: None,
            compensation: None,
            event_count: 1,
            first_event_at: t(start),
        }
    }

    fn saga(steps: Vec<StepView>, end: i64, status: &str) -> SagaDetail {
        let summary: SagaSummary = serde_json::from_value(serde_json::json!({
            "sagaId": "s-1", "sagaType": "T", "status": status,
            "startedAt": t(0), "updatedAt": t(end), "endedAt": t(end), "durationMs": end,
            "currentStep": "A", "failedStep": null, "failure": null,
            "compensationStartedAt": null, "compensationEndedAt": null,
            "compensationDurationMs": null, "eventCount": 3, "lateEventCount": 0,
            "businessKey": null, "traceId": null, "metadata": {}, "services": ["svc"],
            "stuckSince": null, "stuck": null
        }))
        .expect("a summary");
        SagaDetail {
            summary,
            compensation: None,
            steps,
            trace_ids: vec![],
            tracker_trace_ids: vec![],
        }
    }

    /// The bar part of a timeline row (after the two spaces that end the labels).
    fn track_of(line: &str, cells: usize) -> String {
        let chars: Vec<char> = line.chars().collect();
        chars[chars.len() - cells..].iter().collect()
    }

    #[test]
    fn bars_are_to_scale_and_never_leave_the_track() {
        let tr = Track {
            t0: t(0),
            span_ms: 1000.0,
            cells: 50,
        };
        assert_eq!(
            tr.range(t(0), t(500)),
            (0, 25),
            "half the span is half the track"
        );
        assert_eq!(tr.range(t(500), t(1000)), (25, 50));
        assert_eq!(tr.range(t(0), t(1000)), (0, 50));
        // Instants outside the axis are clamped onto it.
        assert_eq!(tr.range(t(-50), t(5000)), (0, 50));
        assert_eq!(tr.cell(t(1000)), 49, "the last instant is on the last cell");
    }

    #[test]
    fn a_step_that_took_no_time_is_one_cell_where_it_happened() {
        let tr = Track {
            t0: t(0),
            span_ms: 1000.0,
            cells: 40,
        };
        assert_eq!(tr.range(t(250), t(250)), (10, 11));
        assert_eq!(
            tr.range(t(1000), t(1000)),
            (39, 40),
            "at the very end, still inside"
        );
        // An end before the start (clock skew) is drawn as an instant.
        assert_eq!(tr.range(t(500), t(100)), (20, 21));
    }

    #[test]
    fn every_row_fills_the_width_and_bars_scale_with_it() {
        let mut b = step("PAYMENT_CHARGED", 1000, Some(3000), "FAILED");
        b.error = Some(ErrorInfo {
            code: "DECLINED".into(),
            message: "no".into(),
        });
        let mut a = step("STOCK_RESERVED", 0, Some(1000), "COMPENSATED");
        a.compensation = Some(CompensationView {
            started_at: Some(t(3000)),
            ended_at: Some(t(4000)),
            duration_ms: Some(1000),
            failed: false,
        });
        let d = saga(
            vec![a, b, step("NOTIFIED", 4000, Some(4000), "SUCCEEDED")],
            4000,
            "COMPENSATED",
        );
        for width in [80, 120, 200] {
            let lines = timeline(&d, &[], 0, width, plain());
            // Header, 3 steps, 1 compensation row, legend.
            assert_eq!(lines.len(), 6, "{lines:#?}");
            for l in &lines[..5] {
                assert_eq!(l.chars().count(), width, "{l:?} at width {width}");
            }
            let labels = 2 + 15 + 1 + 7 + 1 + 12 + 1 + 9 + 1 + 10 + 2;
            let cells = width - labels;
            let stock = track_of(&lines[1], cells);
            let comp = track_of(&lines[2], cells);
            let pay = track_of(&lines[3], cells);
            let notified = track_of(&lines[4], cells);
            // 1 s of a 4 s saga is a quarter of the track.
            // Each end rounds outwards to a whole cell, so a bar is at most 2 cells longer.
            let n = |s: &str, g: char| s.chars().filter(|c| *c == g).count() as f64;
            let near = |got: f64, share: f64| (0.0..=2.0).contains(&(got - share * cells as f64));
            assert!(near(n(&stock, DONE), 0.25), "{stock:?}");
            assert!(stock.starts_with(DONE));
            assert!(near(n(&pay, DONE), 0.5), "{pay:?}");
            assert!(near(n(&comp, COMP), 0.25), "{comp:?}");
            assert!(
                comp.ends_with(COMP),
                "the compensation ends the saga: {comp:?}"
            );
            assert_eq!(n(&notified, DONE), 1.0, "a zero-duration step is one cell");
            assert!(notified.ends_with(DONE));
            assert!(lines[2].contains("↺ compensation"));
            assert!(lines[3].contains("FAILED") && lines[3].contains("+1.00 s"));
        }
    }

    #[test]
    fn a_narrow_terminal_still_gets_a_track_and_long_names_are_cut() {
        let d = saga(
            vec![step(
                "A_VERY_LONG_STEP_NAME_THAT_GOES_ON_AND_ON",
                0,
                None,
                "STARTED",
            )],
            0,
            "STARTED",
        );
        let lines = timeline(&d, &[], 0, 20, plain());
        let row = &lines[1];
        assert!(row.contains('…'), "{row:?}");
        let track = track_of(row, MIN_TRACK);
        assert_eq!(track.chars().count(), MIN_TRACK);
        // A saga of one instant: its running step is one cell at the start.
        assert!(track.starts_with(OPEN), "{track:?}");
        assert_eq!(track.chars().filter(|c| *c == OPEN).count(), 1, "{track:?}");
        assert!(row.contains("running"));
    }

    #[test]
    fn colours_only_when_asked_and_runs_are_painted_once() {
        let mut c = Cells::new(6);
        c.fill((1, 4), DONE, Some(AnsiColor::Green));
        assert_eq!(c.render(plain()), " ███  ");
        let coloured = c.render(Output {
            color: true,
            progress: false,
        });
        assert_eq!(coloured.matches("\u{1b}[32m").count(), 1, "{coloured:?}");
        assert!(coloured.contains("███"));
    }

    #[test]
    fn ages_and_metadata_flags_parse_or_say_why_not() {
        assert_eq!(parse_age("90s"), Ok(chrono::Duration::seconds(90)));
        assert_eq!(parse_age("1h30m"), Ok(chrono::Duration::minutes(90)));
        assert_eq!(parse_age("2d"), Ok(chrono::Duration::days(2)));
        assert_eq!(parse_age("1w"), Ok(chrono::Duration::weeks(1)));
        for bad in ["", "1", "h", "1x", "0m", "-1h"] {
            assert!(parse_age(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_meta("region=eu"), Ok(("region".into(), "eu".into())));
        assert_eq!(parse_meta("a.b=x=y"), Ok(("a.b".into(), "x=y".into())));
        assert!(parse_meta("region").is_err());
        assert!(parse_meta("=eu").is_err());
    }

    #[test]
    fn filters_become_the_apis_parameters() {
        let f = Filters {
            saga_type: Some("ORDER_CREATION".into()),
            status: vec!["FAILED".into(), "COMPENSATED".into()],
            stuck: Some("true".into()),
            since: Some(chrono::Duration::hours(1)),
            meta: vec![("region".into(), "eu".into())],
            ..Filters::default()
        };
        let q = f.query(t(3_600_000));
        let pairs: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("sagaType", "ORDER_CREATION"),
                ("stuck", "true"),
                ("startedAfter", "2026-11-01T10:00:00.000Z"),
                ("status", "FAILED"),
                ("status", "COMPENSATED"),
                ("meta.region", "eu"),
            ]
        );
        assert!(!f.counted_by_stats());
        let f = Filters {
            saga_type: Some("X".into()),
            since: Some(chrono::Duration::hours(1)),
            ..Filters::default()
        };
        assert!(f.counted_by_stats());
    }

    #[test]
    fn csv_rows_are_counted_past_quoted_newlines_and_across_chunks() {
        let mut c = RowCounter::new(ExportFormat::Csv);
        c.feed(b"sagaId,failureMessage\na,\"line one\nline");
        c.feed(b" two\"\nb,\"\"\"quoted\"\"\"\n");
        assert_eq!(c.rows(), 2);
        let mut n = RowCounter::new(ExportFormat::Ndjson);
        n.feed(b"{\"a\":\"x\\ny\"}\n{\"b\"");
        n.feed(b":1}\n");
        assert_eq!(n.rows(), 2);
    }
}
