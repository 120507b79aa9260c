//! How a command's settings are merged: a flag, else its `IICP_*` variable (clap reads both into
//! the command's `Args`), else the command's table of the TOML file given by `--config`, else
//! the default. Each command keeps its own fields; what they all repeat lives here.

use serde::de::{DeserializeOwned, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;
use std::process::ExitCode;

/// A command's table of the config file (`[directory]`, `[node]`, …): the settings it may hold.
/// Implementations deny unknown fields, so a typo is an error rather than silently ignored.
pub(super) trait Table: DeserializeOwned + Default {
    /// The table's name in the file.
    const NAME: &'static str;
}

/// The `T` table of the config file at `path`; its defaults when there is no file or the file
/// has no such table. The other tables belong to other commands and are not looked at.
pub(super) fn read_table<T: Table>(path: Option<&Path>) -> Result<T, String> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    toml::from_str::<InFile<T>>(&text)
        .map(|file| file.0)
        .map_err(|e| format!("config {}: {e}", path.display()))
}

/// A repeatable flag (or its comma-separated variable): given at all, it replaces the file's
/// list.
pub(super) fn list_or<T>(flag: Vec<T>, file: Option<Vec<T>>) -> Vec<T> {
    if flag.is_empty() {
        file.unwrap_or_default()
    } else {
        flag
    }
}

/// Settings that do not merge are a usage error: said on stderr, with exit code 2.
pub(super) fn usage_error(e: &str) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// A whole config file as one command reads it: its own table, nothing else.
struct InFile<T>(T);

impl<'de, T: Table> Deserialize<'de> for InFile<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Tables<T>(PhantomData<T>);

        impl<'de, T: Table> Visitor<'de> for Tables<T> {
            type Value = InFile<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of tables")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut tables: A) -> Result<InFile<T>, A::Error> {
                let mut mine = None;
                while let Some(name) = tables.next_key::<String>()? {
                    if name == T::NAME {
                        mine = Some(tables.next_value::<T>()?);
                    } else {
                        tables.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(InFile(mine.unwrap_or_default()))
            }
        }

        deserializer.deserialize_map(Tables(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Part {
        port: Option<u16>,
    }

    impl Table for Part {
        const NAME: &'static str = "part";
    }

    fn read(text: &str) -> Result<Part, String> {
        let path = std::env::temp_dir().join(format!(
            "iicp-settings-{}-{:x}.toml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        let read = read_table::<Part>(Some(&path));
        std::fs::remove_file(&path).unwrap();
        read
    }

    #[test]
    fn only_the_commands_table_is_read_and_typos_in_it_are_errors() {
        assert_eq!(read_table::<Part>(None).unwrap(), Part::default());
        assert_eq!(read("[other]\nx = 1\n").unwrap(), Part::default());
        assert_eq!(
            read("[other]\nx = 1\n[part]\nport = 7\n").unwrap(),
            Part { port: Some(7) }
        );
        let typo = read("[part]\npotr = 7\n").unwrap_err();
        assert!(typo.contains("unknown field `potr`"), "{typo}");
        assert!(typo.contains("line 2"), "{typo}");
        let not_a_table = read("part = 5\n").unwrap_err();
        assert!(
            not_a_table.contains("expected struct Part"),
            "{not_a_table}"
        );
        assert!(
            read_table::<Part>(Some(Path::new("/nonexistent/iicp.toml")))
                .unwrap_err()
                .starts_with("cannot read config /nonexistent/iicp.toml")
        );
    }

    #[test]
    fn a_repeated_flag_replaces_the_files_list() {
        assert_eq!(list_or(vec![1], Some(vec![2, 3])), [1]);
        assert_eq!(list_or(Vec::new(), Some(vec![2, 3])), [2, 3]);
        assert_eq!(list_or(Vec::<u8>::new(), None), [] as [u8; 0]);
    }
}
