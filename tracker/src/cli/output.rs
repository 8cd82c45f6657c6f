//! Terminal output: one place that decides whether to colour, and the shared table and
//! progress-bar styles, so every command looks alike.

use std::io::IsTerminal as _;

use anstyle::{AnsiColor, Style};

/// `--color`: `auto` colours only a terminal, and never when `NO_COLOR` is set (any
/// non-empty value, per no-color.org).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

/// What a command writes with: whether colours are on, and helpers that honour it.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub color: bool,
    /// stderr is a terminal: progress bars are drawn (they go to stderr, so piping stdout
    /// into a file still shows progress, and a script's stderr gets none).
    pub progress: bool,
}

impl Output {
    pub fn new(choice: ColorChoice) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => !no_color && std::io::stdout().is_terminal(),
        };
        Self {
            color,
            progress: std::io::stderr().is_terminal(),
        }
    }

    /// `text` in `style` when colours are on, else as is.
    pub fn paint(&self, style: Style, text: impl std::fmt::Display) -> String {
        if self.color {
            format!("{style}{text}{style:#}")
        } else {
            text.to_string()
        }
    }

    pub fn bold(&self, text: impl std::fmt::Display) -> String {
        self.paint(Style::new().bold(), text)
    }

    pub fn dim(&self, text: impl std::fmt::Display) -> String {
        self.paint(Style::new().dimmed(), text)
    }

    pub fn red(&self, text: impl std::fmt::Display) -> String {
        self.paint(AnsiColor::Red.on_default(), text)
    }

    pub fn green(&self, text: impl std::fmt::Display) -> String {
        self.paint(AnsiColor::Green.on_default(), text)
    }

    pub fn yellow(&self, text: impl std::fmt::Display) -> String {
        self.paint(AnsiColor::Yellow.on_default(), text)
    }

    pub fn blue(&self, text: impl std::fmt::Display) -> String {
        self.paint(AnsiColor::Blue.on_default(), text)
    }

    /// A table in the house style: no outer borders, a rule under the header, columns
    /// padded to their widest cell. Colour (when on) is applied by the caller with
    /// `comfy_table::Cell::fg`, which comfy-table strips itself when styling is disabled.
    pub fn table(&self, header: &[&str]) -> comfy_table::Table {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::NOTHING)
            .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
            .set_header(header.iter().map(comfy_table::Cell::new));
        if self.color {
            t.enforce_styling();
        } else {
            t.force_no_tty();
        }
        t
    }

    /// A progress bar on stderr with a count, a rate and an ETA; hidden when stderr is not a
    /// terminal. `len` unknown → a spinner with the count.
    pub fn progress(&self, len: Option<u64>, what: &str) -> indicatif::ProgressBar {
        let bar = match len {
            Some(n) => indicatif::ProgressBar::new(n).with_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {human_pos}/{human_len} ({rate}, ETA {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .with_key("rate", rate)
                .progress_chars("=> "),
            ),
            None => indicatif::ProgressBar::new_spinner().with_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} {human_pos} ({rate})")
                    .map(|s| s.with_key("rate", rate))
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(what.to_string());
        if !self.progress {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        bar
    }
}

/// The colour of a saga or step status: done green, failed red, compensation yellow,
/// running blue. The status is always written out too, so colour is never the only sign.
pub fn status_color(status: &str) -> Option<AnsiColor> {
    match status {
        "COMPLETED" | "SUCCEEDED" => Some(AnsiColor::Green),
        "FAILED" => Some(AnsiColor::Red),
        "COMPENSATED" | "COMPENSATING" => Some(AnsiColor::Yellow),
        "STARTED" | "IN_PROGRESS" => Some(AnsiColor::Blue),
        _ => None,
    }
}

fn table_color(c: AnsiColor) -> comfy_table::Color {
    use comfy_table::Color;
    match c {
        AnsiColor::Green => Color::Green,
        AnsiColor::Red => Color::Red,
        AnsiColor::Yellow => Color::Yellow,
        AnsiColor::Blue => Color::Blue,
        _ => Color::Reset,
    }
}

impl Output {
    /// A status in its colour (see [`status_color`]).
    pub fn status(&self, status: &str) -> String {
        match status_color(status) {
            Some(c) => self.paint(c.on_default(), status),
            None => status.to_owned(),
        }
    }

    /// A table cell holding `text` in `color` (comfy-table drops it when colours are off).
    pub fn cell(
        &self,
        text: impl std::fmt::Display,
        color: Option<AnsiColor>,
    ) -> comfy_table::Cell {
        let cell = comfy_table::Cell::new(text);
        match color {
            Some(c) if self.color => cell.fg(table_color(c)),
            _ => cell,
        }
    }

    /// A status cell in its colour.
    pub fn status_cell(&self, status: &str) -> comfy_table::Cell {
        self.cell(status, status_color(status))
    }

    /// Columns to lay out for: `--width`-style override first, then the terminal's width,
    /// then `COLUMNS`, then 100 (a pipe has no width; 100 reads well in a CI log).
    pub fn width(&self, requested: Option<usize>) -> usize {
        requested
            .or_else(|| {
                console::Term::stdout()
                    .size_checked()
                    .map(|(_, cols)| usize::from(cols))
            })
            .or_else(|| std::env::var("COLUMNS").ok()?.trim().parse().ok())
            .filter(|w| *w > 0)
            .unwrap_or(100)
    }
}

/// `{rate}` in the progress templates: whole items per second (indicatif's own `{per_sec}`
/// prints four decimals, e.g. `42236.1498/s`).
fn rate(state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
    let per_sec = state.per_sec();
    let _ = if per_sec >= 10.0 || per_sec == 0.0 {
        write!(w, "{per_sec:.0}/s")
    } else {
        write!(w, "{per_sec:.1}/s")
    };
}
