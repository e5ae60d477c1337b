//! Logging, set up once: `RUST_LOG`-style filter (default `info`), text or JSON.
//! aya logs through `log`; tracing-subscriber's log bridge picks it up.

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--log-level` is not a valid filter directive.
    #[error("invalid log level {level:?}")]
    Level {
        /// The directive given.
        level: String,
        /// Why it does not parse.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber")]
    Install(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Installs the global subscriber. `level` is an `EnvFilter` directive
/// (`info`, `palisade_agent=debug,aya=warn`, ...).
pub fn init(level: &str, format: LogFormat) -> Result<(), Error> {
    let filter = EnvFilter::try_new(level).map_err(|source| Error::Level {
        level: level.to_string(),
        source,
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(Error::Install)
}
