//! Strict TOML configuration files: every key known, every error located by file, line and
//! dotted key (`tunnel.route[2].kind`). Used by the backup, status and client configurations.

use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use miette::{Diagnostic, NamedSource, SourceSpan};
use toml::Spanned;

/// A configuration error, pointing at the file, line and dotted key.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{}{}: {key}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
#[diagnostic(code(homelab::config))]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
    #[source_code]
    source_code: NamedSource<String>,
    #[label("{message}")]
    span: Option<SourceSpan>,
}

/// What a configuration check found wrong: the dotted key, its span and what was expected.
pub(crate) type Invalid = (String, Range<usize>, String);

/// Reads a strict TOML configuration file, deserializes it and runs `validate`; every error
/// names the file, line and dotted key.
pub(crate) fn load_toml<T: serde::de::DeserializeOwned>(
    file: &Path,
    validate: impl FnOnce(&T) -> Result<(), Invalid>,
) -> Result<T, Box<ConfigError>> {
    let text = std::fs::read_to_string(file).map_err(|err| {
        Box::new(ConfigError::new(
            file,
            "",
            0..0,
            format!("cannot read: {err}"),
        ))
    })?;
    parse_toml(file, text, validate)
}

pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: String,
    validate: impl FnOnce(&T) -> Result<(), Invalid>,
) -> Result<T, Box<ConfigError>> {
    let parsed = toml::Deserializer::parse(&text)
        .map_err(|err| (String::new(), err, true))
        .and_then(|de| {
            serde_path_to_error::deserialize::<_, T>(de)
                .map_err(|err| (err.path().to_string(), err.into_inner(), false))
        });
    let config = match parsed {
        Ok(config) => config,
        Err((key, err, syntax)) => {
            // A syntax error's span can be empty (a point): widen it to a character so that
            // the error still names its line.
            let span = match err.span() {
                Some(span) if syntax && span.is_empty() && !text.is_empty() => {
                    // One whole character, at a character boundary.
                    let mut start = span.start.min(text.len() - 1);
                    while !text.is_char_boundary(start) {
                        start -= 1;
                    }
                    let width = text[start..].chars().next().map_or(1, char::len_utf8);
                    start..start + width
                }
                Some(span) => span,
                None => 0..0,
            };
            let err = ConfigError::new(file, &key, span, err.message().to_owned());
            return Err(Box::new(err.with_source(text)));
        }
    };
    match validate(&config) {
        Ok(()) => Ok(config),
        Err((key, span, message)) => Err(Box::new(
            ConfigError::new(file, &key, span, message).with_source(text),
        )),
    }
}

/// Absolute and in the clean form kopia records (no `.`, `..`, `//` or trailing `/`), so that
/// it compares equal to the paths in kopia's snapshot list.
pub(crate) fn require_absolute(key: &str, path: &Spanned<PathBuf>) -> Result<(), Invalid> {
    let value = path.get_ref();
    let clean: PathBuf = value.components().collect();
    let only_normal = value
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if value.is_absolute() && only_normal && clean.as_os_str() == value.as_os_str() {
        Ok(())
    } else {
        Err(invalid(
            key,
            path,
            "an absolute path without `.`, `..`, `//` or a trailing `/`",
        ))
    }
}

pub(crate) fn require_http_url(key: &str, url: &Spanned<String>) -> Result<(), Invalid> {
    let value = url.get_ref();
    if value.starts_with("https://") || value.starts_with("http://") {
        Ok(())
    } else {
        Err(invalid(key, url, "an http:// or https:// URL"))
    }
}

pub(crate) fn invalid<T>(key: &str, value: &Spanned<T>, expected: &str) -> Invalid {
    (key.to_owned(), value.span(), format!("expected {expected}"))
}

impl ConfigError {
    /// Prints `error: file:line: key: message` (the line a log keeps) and, on a terminal, the
    /// annotated excerpt of the file.
    pub fn report(self) {
        eprintln!("error: {self}");
        if crate::logging::interactive() && self.span.is_some() {
            eprintln!("{:?}", miette::Report::new(self));
        }
    }

    fn new(file: &Path, key: &str, span: Range<usize>, message: String) -> Self {
        Self {
            file: file.to_owned(),
            line: None,
            key: if key.is_empty() || key == "." {
                "(top level)".to_owned()
            } else {
                key.to_owned()
            },
            message,
            source_code: NamedSource::new(file.display().to_string(), String::new()),
            span: (!span.is_empty()).then(|| span.clone().into()),
        }
    }

    fn with_source(mut self, text: String) -> Self {
        if let Some(span) = self.span {
            let offset = span.offset().min(text.len());
            self.line = Some(
                text.as_bytes()[..offset]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1,
            );
        }
        self.source_code = NamedSource::new(self.file.display().to_string(), text);
        self
    }
}
