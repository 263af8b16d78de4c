//! `[log]`: how log lines are written (`format = "text"` or `"json"`).
//! `--log-format` on the command line wins over it.

use serde::Deserialize;

use super::{ConfigError, Seconds};

/// Log line format: human text (the default) or one JSON object a line.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// Seconds between the one-line stats in the log (`run`); 0: none.
    pub stats_interval: Seconds,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            stats_interval: Seconds(60.0),
        }
    }
}

impl LogConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = self.stats_interval.get();
        if !(s.is_finite() && (s == 0.0 || (0.1..=86_400.0).contains(&s))) {
            return Err(ConfigError::Invalid(format!(
                "log.stats_interval = {s}: must be 0 (off) or 0.1..=86400 seconds"
            )));
        }
        Ok(())
    }

    /// How often the stats line is written, if at all.
    pub fn stats_every(&self) -> Option<std::time::Duration> {
        (self.stats_interval.get() > 0.0).then(|| self.stats_interval.duration())
    }

    /// `[log]` of the file at `path`, read before logging starts so the
    /// first lines already have the configured format. A file that cannot
    /// be read or parsed gives the default here: loading the whole file
    /// moments later reports the problem, in whichever format.
    pub fn peek(path: &std::path::Path) -> LogConfig {
        #[derive(Deserialize)]
        struct OnlyLog {
            #[serde(default)]
            log: LogConfig,
        }
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
            .and_then(|mut t| {
                let log = t.remove("log")?;
                toml::Value::Table(toml::Table::from_iter([("log".to_string(), log)]))
                    .try_into::<OnlyLog>()
                    .ok()
            })
            .map(|o| o.log)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn format_reads_and_defaults() {
        assert_eq!(Config::parse("").unwrap().log.format, LogFormat::Text);
        let c = Config::parse("[log]\nformat = \"json\"\n").unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        assert!(Config::parse("[log]\nformat = \"xml\"\n").is_err());
        assert!(Config::parse("[log]\nlevel = \"info\"\n").is_err());
    }

    #[test]
    fn stats_interval_reads_defaults_and_is_bounded() {
        let d = Config::parse("").unwrap().log;
        assert_eq!(d.stats_every(), Some(std::time::Duration::from_secs(60)));
        let c = Config::parse("[log]\nstats_interval = 0\n").unwrap();
        assert_eq!(c.log.stats_every(), None);
        let c = Config::parse("[log]\nstats_interval = 0.5\n").unwrap();
        assert_eq!(
            c.log.stats_every(),
            Some(std::time::Duration::from_millis(500))
        );
        let e = Config::parse("[log]\nstats_interval = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("log.stats_interval"), "{e}");
    }

    #[test]
    fn peek_reads_only_log_and_tolerates_the_rest() {
        let dir = std::env::temp_dir().join(format!("vmflow-logpeek-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.toml");
        std::fs::write(&p, "[log]\nformat = \"json\"\n[flow]\nbogus = 1\n").unwrap();
        assert_eq!(LogConfig::peek(&p).format, LogFormat::Json);
        std::fs::write(&p, "[log\n").unwrap();
        assert_eq!(LogConfig::peek(&p).format, LogFormat::Text);
        assert_eq!(
            LogConfig::peek(&dir.join("missing.toml")).format,
            LogFormat::Text
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
