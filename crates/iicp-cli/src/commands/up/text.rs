//! What `iicp up` tells its operator: how to start a backend when there is none, and the
//! ready-to-paste examples once the mesh is up.

use iicp_node::backend::BackendKind;
use iicp_node::detect::Candidate;

/// A URL without the trailing slash `url` adds to a bare origin.
pub fn bare(url: &url::Url) -> &str {
    url.as_str().trim_end_matches('/')
}

/// A string as a single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub fn how_to_start_backend() {
    say!("  to serve models, start a local backend, for example:");
    say!("    ollama serve          (then, in another terminal: ollama pull llama3.2)");
    say!("    llama-server -m model.gguf --port 8080");
}

pub fn no_models(kind: BackendKind) {
    match kind {
        BackendKind::Ollama => say!("  pull one with:  ollama pull llama3.2"),
        _ => say!("  load a model into it; the node picks it up within a minute"),
    }
}

pub fn no_backend(candidates: &[Candidate], directory: &url::Url) {
    let places: Vec<String> = candidates
        .iter()
        .map(|c| format!("{} {}", c.name, c.base_url))
        .collect();
    if places.is_empty() {
        say!("no backend: detection is off");
    } else {
        // The usual candidates are one per server; the hidden --detect lists each URL twice.
        let mut seen = std::collections::BTreeSet::new();
        let urls: Vec<&str> = candidates
            .iter()
            .map(|c| c.base_url.as_str())
            .filter(|u| seen.insert(*u))
            .collect();
        say!("no local backend found (looked at {})", urls.join(", "));
    }
    say!("  the directory and gateway run anyway; no node is started.");
    how_to_start_backend();
    say!("  then join it to this mesh from another terminal:");
    say!("    iicp node --directory {}", bare(directory));
    say!("  (or stop this with Ctrl-C and run `iicp up` again: it finds the backend itself)");
}

pub struct Ready<'a> {
    pub directory: &'a url::Url,
    pub node: Option<&'a url::Url>,
    pub gateway: &'a url::Url,
    /// A chat model for the examples, when the backend listed one.
    pub model: Option<&'a str>,
    /// The mesh listens on loopback only.
    pub loopback: bool,
}

pub fn ready(r: &Ready<'_>) {
    let gateway = bare(r.gateway);
    say!();
    say!("ready: a local mesh");
    say!("  directory  {}", bare(r.directory));
    match r.node {
        Some(n) => say!("  node       {}", bare(n)),
        None => say!("  node       none yet"),
    }
    say!("  gateway    {gateway}   (OpenAI base URL {gateway}/v1)");
    say!();
    let model = r.model.unwrap_or("MODEL");
    let model_json = serde_json::Value::from(model).to_string();
    let body =
        format!(r#"{{"model":{model_json},"messages":[{{"role":"user","content":"Say hello"}}]}}"#);
    if r.node.is_none() || r.model.is_none() {
        say!("once a node serves a model, try (MODEL is its name):");
    } else {
        say!("try it:");
    }
    say!("  curl {gateway}/v1/chat/completions \\");
    say!("    -H 'Content-Type: application/json' \\");
    say!("    -d {}", shell_quote(&body));
    say!();
    say!("or from Python (pip install openai):");
    say!("  from openai import OpenAI");
    say!("  client = OpenAI(base_url=\"{gateway}/v1\", api_key=\"any\")");
    say!(
        "  reply = client.chat.completions.create(model={}, messages=[{{\"role\": \"user\", \
         \"content\": \"Say hello\"}}])",
        model_json
    );
    say!("  print(reply.choices[0].message.content)");
    say!();
    if r.loopback {
        say!("This mesh is local: only this machine can reach it. Its directory runs in dev mode,");
    } else {
        say!("This mesh is local to this machine and its network. Its directory runs in dev mode,");
    }
    say!("which accepts node endpoints a public directory refuses (loopback, private addresses).");
    say!("To share this backend on a public mesh instead, run a node against that directory:");
    say!("  iicp node --directory https://DIRECTORY --public-url https://THIS-HOST");
    say!("Press Ctrl-C to stop; the node deregisters first.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_survive_single_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote("{}"), "'{}'");
    }
}
