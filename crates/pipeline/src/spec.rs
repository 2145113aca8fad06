//! `pipeline.yaml`: parsing and validation. Every error names the file, line and column.
//!
//! ```yaml
//! params:                      # scalars, substituted into commands as ${name}
//!   size: 150
//! param_sets:                  # optional: named overrides, `pipeline --params big run`
//!   big: {size: 224}
//! stages:                      # ordered; the order breaks ties between independent stages
//!   features:
//!     desc: bottleneck features  # optional
//!     cmd: bottleneck --data data/train --size ${size} --out artifacts/features
//!     deps: [data/train]       # files or folders
//!     params: [size]           # every ${param} the stage uses must be listed here
//!     outs: [artifacts/features]
//!     metrics: [artifacts/features/summary.json]  # optional JSON files
//!     threads: 4               # optional: cores it uses, for the Snakefile export
//!     heavy: true              # optional: it uses every core it gets (Snakefile: 8 threads unless `threads`)
//!     fanout: shards           # optional: exports may run it as `--shard i/N` jobs and a `--merge` job
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::dag::overlaps;
use crate::typed::{ParamType, TYPES};
use saphyr::{MarkedYaml, ScalarStyle, YamlData, YamlLoader};
use saphyr_parser::Marker;

/// The most YAML nodes that aliases may produce in one file.
const ALIAS_NODES: usize = 4096;

/// A position in the pipeline file, 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loc {
    pub line: usize,
    pub col: usize,
}

impl Loc {
    fn of(m: &Marker) -> Loc {
        Loc { line: m.line(), col: m.col() + 1 }
    }
}

/// A configuration error: `file:line:column: message` (exit code 2).
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub loc: Option<Loc>,
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.loc {
            Some(l) => write!(f, "{}:{}:{}: {}", self.file.display(), l.line, l.col, self.msg),
            None => write!(f, "{}: {}", self.file.display(), self.msg),
        }
    }
}

/// A parsed pipeline: stages in file order, every path normalised and params substituted.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The pipeline file, as given.
    pub file: PathBuf,
    /// Its folder: commands run there and relative paths are relative to it.
    pub dir: PathBuf,
    pub params: BTreeMap<String, Param>,
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone)]
pub struct Param {
    pub value: String,
    pub loc: Loc,
    /// The values it may take (`type:` or `choices:` in the file; any text otherwise).
    pub kind: ParamType,
}

#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub loc: Loc,
    pub desc: Option<String>,
    /// The command with params substituted, run by `sh -c`.
    pub cmd: String,
    /// The command as written, with `${param}`s.
    pub template: String,
    /// The params the stage lists, with their values.
    pub params: BTreeMap<String, String>,
    pub deps: Vec<PathSpec>,
    pub outs: Vec<PathSpec>,
    pub metrics: Vec<PathSpec>,
    /// The cores the stage uses (`threads:`), for workflow engines that schedule by cores.
    pub threads: Option<u32>,
    /// `heavy: true`: it uses every core it is given (exports give it several unless `threads:`).
    pub heavy: bool,
    /// `fanout: shards`: its program can split the work, `--shard i/N` into slices and
    /// `--merge DIR... --out OUT` of them (an export may run it so; see `fanout`).
    pub fanout: bool,
}

/// A path from the file (normalised, relative to [`Pipeline::dir`] unless absolute) and where it was written.
#[derive(Debug, Clone)]
pub struct PathSpec {
    pub path: PathBuf,
    pub loc: Loc,
    /// Written with a trailing `/`: a folder (the Snakefile export needs to know before it exists).
    pub folder: bool,
    /// As written, with its `${param}`s (for exports that substitute params themselves).
    pub template: String,
}

impl Stage {
    /// The command with other values for the params; `None` if one is missing.
    pub fn cmd_with(&self, params: &BTreeMap<String, String>) -> Option<String> {
        let value = |name: &str, _| params.get(name).cloned().ok_or(());
        crate::shell::render_command(&self.template, |_| (), value, |_, _, _| ()).ok()
    }

    /// Everything the stage writes: its outs, and the metrics files that are not inside one of them.
    pub fn written(&self) -> impl Iterator<Item = &PathSpec> {
        let extra = self.metrics.iter().filter(|m| !self.outs.iter().any(|o| m.path.starts_with(&o.path)));
        self.outs.iter().chain(extra)
    }
}

/// Param values chosen on the command line, applied over the file's `params` before anything
/// else: a named `param_sets` entry, then single `NAME=VALUE` settings, in that order.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub set: Option<String>,
    pub values: Vec<(String, String)>,
}

impl Pipeline {
    pub fn load(file: &Path) -> Result<Pipeline, ConfigError> {
        Pipeline::load_with(file, &Overrides::default())
    }

    pub fn load_with(file: &Path, overrides: &Overrides) -> Result<Pipeline, ConfigError> {
        let src = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            loc: None,
            msg: format!("cannot read the pipeline file: {e} (pick another with --file)"),
        })?;
        Parser { file, src: &src, overrides }.pipeline()
    }

    pub fn parse(file: &Path, src: &str) -> Result<Pipeline, ConfigError> {
        Parser { file, src, overrides: &Overrides::default() }.pipeline()
    }

    /// The lock file that goes with this pipeline: `pipeline.yaml` -> `pipeline.lock`.
    pub fn lock_path(&self) -> PathBuf {
        sd_data::layout::pipeline::lock_path(&self.file)
    }

    /// The folder of the pipeline's own state: the run lock and the hash cache.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join(STATE_DIR)
    }

    /// An error located in this pipeline's file.
    pub fn error(&self, loc: Loc, msg: impl Into<String>) -> ConfigError {
        ConfigError { file: self.file.clone(), loc: Some(loc), msg: msg.into() }
    }

    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }

    /// A path of the pipeline as seen from the current directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.dir.join(path)
    }
}

struct Parser<'a> {
    file: &'a Path,
    src: &'a str,
    overrides: &'a Overrides,
}

type Node<'a> = MarkedYaml<'a>;

const STAGE_KEYS: &str = "cmd, deps, params, outs, metrics, desc, threads, heavy, fanout";

/// The folder next to the pipeline file that holds `pipeline`'s own state (run lock, hash cache,
/// run cache, runs).
pub use sd_data::layout::pipeline::STATE_DIR;

/// The files of the pipeline itself, relative to its folder, with what they are: no stage may
/// write them (outs are deleted before their stage runs).
pub fn own_files(file: &Path) -> [(PathBuf, &'static str); 3] {
    let name = |p: &Path| PathBuf::from(p.file_name().unwrap_or_default());
    [
        (name(file), "the pipeline file"),
        (name(&file.with_extension("lock")), "its lock file"),
        (PathBuf::from(STATE_DIR), "its run lock and hash cache"),
    ]
}

impl<'a> Parser<'a> {
    fn err(&self, loc: Loc, msg: impl Into<String>) -> ConfigError {
        ConfigError { file: self.file.to_path_buf(), loc: Some(loc), msg: msg.into() }
    }

    /// A command-line choice the file cannot satisfy (no position in the file to point at).
    fn usage(&self, msg: impl Into<String>) -> ConfigError {
        ConfigError { file: self.file.to_path_buf(), loc: None, msg: msg.into() }
    }

    fn at(&self, node: &Node, msg: impl Into<String>) -> ConfigError {
        self.err(Loc::of(&node.span.start), msg)
    }

    fn pipeline(&self) -> Result<Pipeline, ConfigError> {
        let mut parser = saphyr_parser::Parser::new_from_str(self.src);
        let mut loader: YamlLoader<Node> = YamlLoader::default();
        // Keep scalars as written: `1e-3` must reach the command as `1e-3`, not `0.001`.
        loader.early_parse(false);
        // Aliases clone their anchor's nodes (about 200 bytes each): saphyr's default budget of
        // 100000 lets a 350-byte file of nested aliases take 19 MB. A pipeline never needs more
        // than a few shared lists.
        loader.alias_limit(ALIAS_NODES);
        let scan = |e: &saphyr::ScanError| self.err(Loc::of(e.marker()), format!("invalid YAML: {}", e.info()));
        parser.load(&mut loader, true).map_err(|e| scan(&e))?;
        if let Some(e) = loader.error() {
            return Err(scan(e));
        }
        let docs = loader.into_documents();
        if let Some(second) = docs.get(1) {
            return Err(self.at(second, "only one YAML document is allowed"));
        }
        let Some(root) = docs.first().filter(|d| !is_null(d)) else {
            return Err(self.err(Loc { line: 1, col: 1 }, "empty pipeline: expected `params:` and `stages:`"));
        };

        let mut params = BTreeMap::new();
        let (mut stages_node, mut sets_node) = (None, None);
        for (key, value) in self.mapping(root, "the pipeline")? {
            match self.scalar(key, "a key")?.as_str() {
                "params" => params = self.params(value)?,
                "param_sets" => sets_node = Some(value),
                "stages" => stages_node = Some(value),
                other => {
                    return Err(
                        self.at(key, format!("unknown key `{other}` (expected `params`, `param_sets` or `stages`)"))
                    );
                }
            }
        }
        self.apply_overrides(&mut params, sets_node)?;
        let Some(stages_node) = stages_node.filter(|n| !is_null(n)) else {
            return Err(self.at(root, "no `stages:` section"));
        };
        let mut stages: Vec<Stage> = Vec::new();
        for (key, value) in self.mapping(stages_node, "`stages`")? {
            stages.push(self.stage(key, value, &params)?);
        }
        if stages.is_empty() {
            return Err(self.at(stages_node, "`stages:` is empty"));
        }
        let dir = match self.file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(Pipeline { file: self.file.to_path_buf(), dir, params, stages })
    }

    fn params(&self, node: &Node<'a>) -> Result<BTreeMap<String, Param>, ConfigError> {
        let mut params = BTreeMap::new();
        if is_null(node) {
            return Ok(params);
        }
        for (key, value) in self.mapping(node, "`params`")? {
            let name = self.scalar(key, "a param name")?;
            if !valid_name(&name) {
                return Err(self.at(key, format!("invalid param name `{name}` (letters, digits, `_`, `-`, `.`)")));
            }
            let (value, kind) = self.param_value(&name, value)?;
            params.insert(name, Param { value, loc: Loc::of(&key.span.start), kind });
        }
        Ok(params)
    }

    /// A param's value, plain (`size: 150`) or with the values it may take
    /// (`size: {value: 150, type: int}`, `{value: caffe, choices: [caffe, rescale]}`), checked.
    fn param_value(&self, name: &str, node: &Node<'a>) -> Result<(String, ParamType), ConfigError> {
        let what = format!("param `{name}`");
        if !matches!(node.data, YamlData::Mapping(_)) {
            return Ok((self.scalar(node, &what)?, ParamType::Any));
        }
        let (mut value, mut kind) = (None, None);
        for (k, v) in self.mapping(node, &what)? {
            match self.scalar(k, "a key")?.as_str() {
                "value" => value = Some(v),
                "type" if kind.is_none() => {
                    let t = self.scalar(v, &format!("the type of {what}"))?;
                    let named = ParamType::named(&t)
                        .ok_or_else(|| self.at(v, format!("unknown type `{t}` for {what} (expected {TYPES})")))?;
                    kind = Some(named);
                }
                "choices" if kind.is_none() => {
                    let items = self.list(v, &format!("the choices of {what}"))?;
                    let choices = items.iter().map(|c| self.scalar(c, "a choice")).collect::<Result<Vec<_>, _>>()?;
                    if choices.is_empty() {
                        return Err(self.at(v, format!("{what} lists no choices")));
                    }
                    kind = Some(ParamType::Choices(choices));
                }
                "type" | "choices" => return Err(self.at(k, format!("{what} has both `type` and `choices`: keep one"))),
                other => {
                    return Err(
                        self.at(k, format!("unknown key `{other}` in {what} (expected value, type or choices)"))
                    );
                }
            }
        }
        let value = value.ok_or_else(|| self.at(node, format!("{what} has no `value`")))?;
        let kind = kind.unwrap_or_default();
        let text = self.scalar(value, &what)?;
        kind.check(&text).map_err(|e| self.at(value, format!("{what}: {e}")))?;
        Ok((text, kind))
    }

    /// Checks every set in `param_sets` (each names known params only) and applies the chosen
    /// one, then the single settings.
    fn apply_overrides(
        &self,
        params: &mut BTreeMap<String, Param>,
        sets: Option<&Node<'a>>,
    ) -> Result<(), ConfigError> {
        let mut chosen = None;
        let mut names = Vec::new();
        for (key, value) in
            sets.filter(|n| !is_null(n)).map(|n| self.mapping(n, "`param_sets`")).transpose()?.unwrap_or_default()
        {
            let name = self.scalar(key, "a param set name")?;
            let mut set = Vec::new();
            for (k, v) in self.mapping(value, &format!("param set `{name}`"))? {
                let param = self.scalar(k, "a param name")?;
                if !params.contains_key(&param) {
                    return Err(self.at(k, format!("param set `{name}` sets unknown param `{param}`{}", known(params))));
                }
                let value = self.scalar(v, &format!("param `{param}` of set `{name}`"))?;
                params[&param]
                    .kind
                    .check(&value)
                    .map_err(|e| self.at(v, format!("param `{param}` of set `{name}`: {e}")))?;
                set.push((param, value, Loc::of(&k.span.start)));
            }
            if self.overrides.set.as_deref() == Some(name.as_str()) {
                chosen = Some(set);
            }
            names.push(name);
        }
        if let Some(wanted) = &self.overrides.set {
            let Some(set) = chosen else {
                let defined = if names.is_empty() {
                    "the file defines no `param_sets`".into()
                } else {
                    format!("defined: {}", names.join(", "))
                };
                return Err(self.usage(format!("--params {wanted}: no such param set ({defined})")));
            };
            for (name, value, loc) in set {
                let p = params.get_mut(&name).expect("checked above");
                (p.value, p.loc) = (value, loc);
            }
        }
        for (name, value) in &self.overrides.values {
            let Some(p) = params.get_mut(name) else {
                return Err(self.usage(format!("--set {name}=...: unknown param `{name}`{}", known(params))));
            };
            p.kind.check(value).map_err(|e| self.err(p.loc, format!("--set {name}={value}: {e}")))?;
            p.value = value.clone();
        }
        Ok(())
    }

    fn stage(&self, key: &Node<'a>, node: &Node<'a>, params: &BTreeMap<String, Param>) -> Result<Stage, ConfigError> {
        let name = self.scalar(key, "a stage name")?;
        if !valid_name(&name) || name.starts_with(['-', '.']) {
            return Err(self.at(key, format!("invalid stage name `{name}` (letters, digits, `_`, `-`, `.`)")));
        }
        let what = format!("stage `{name}`");
        let mut fields: BTreeMap<&str, &Node> = BTreeMap::new();
        for (k, v) in self.mapping(node, &what)? {
            let field = self.scalar(k, "a key")?;
            let Some(field) = STAGE_KEYS.split(", ").find(|f| *f == field) else {
                return Err(self.at(k, format!("unknown key `{field}` in {what} (expected one of {STAGE_KEYS})")));
            };
            fields.insert(field, v);
        }

        // Params first: the other fields may only use the params listed here.
        let mut listed = BTreeMap::new();
        if let Some(list) = fields.get("params") {
            for item in self.list(list, &format!("`params` of {what}"))? {
                let p = self.scalar(item, "a param name")?;
                let Some(param) = params.get(&p) else {
                    return Err(self.at(item, format!("{what} lists unknown param `{p}`{}", known(params))));
                };
                if listed.insert(p.clone(), param.value.clone()).is_some() {
                    return Err(self.at(item, format!("param `{p}` is listed twice")));
                }
            }
        }
        let text = |node: &Node<'a>, field: &str| -> Result<String, ConfigError> {
            let raw = self.scalar(node, &format!("`{field}` of {what}"))?;
            self.substitute(node, &raw, &what, &listed, params, field == "cmd")
        };

        let Some(cmd_node) = fields.get("cmd") else {
            return Err(self.at(key, format!("{what} has no `cmd`")));
        };
        let template = self.scalar(cmd_node, &format!("`cmd` of {what}"))?;
        let cmd = text(cmd_node, "cmd")?;
        if cmd.trim().is_empty() {
            return Err(self.at(cmd_node, format!("{what} has an empty `cmd`")));
        }
        let desc = fields.get("desc").map(|d| self.scalar(d, "`desc`")).transpose()?;
        let paths = |field: &str, out: bool| -> Result<Vec<PathSpec>, ConfigError> {
            let Some(list) = fields.get(field) else { return Ok(Vec::new()) };
            let mut specs: Vec<PathSpec> = Vec::new();
            for item in self.list(list, &format!("`{field}` of {what}"))? {
                let template = self.scalar(item, &format!("`{field}` of {what}"))?;
                let raw = text(item, field)?;
                let path = normalize(&raw).ok_or_else(|| self.at(item, format!("empty path in `{field}`")))?;
                if out && (path.is_absolute() || path.starts_with("..")) {
                    return Err(self.at(
                        item,
                        format!("`{field}` path `{raw}` must stay inside the pipeline folder (it is deleted before the stage runs)"),
                    ));
                }
                if let Some((own, what)) = own_files(self.file).into_iter().find(|(f, _)| out && overlaps(&path, f)) {
                    return Err(self.at(
                        item,
                        format!(
                            "`{field}` path `{raw}` would delete {what} `{}` (outs are deleted before their stage runs)",
                            own.display()
                        ),
                    ));
                }
                if specs.iter().any(|s| s.path == path) {
                    return Err(self.at(item, format!("`{raw}` is listed twice in `{field}`")));
                }
                let folder = raw.trim().ends_with('/');
                specs.push(PathSpec { path, loc: Loc::of(&item.span.start), folder, template });
            }
            Ok(specs)
        };
        let deps = paths("deps", false)?;
        let outs = paths("outs", true)?;
        let metrics = paths("metrics", true)?;
        let threads = match fields.get("threads") {
            Some(node) => {
                let text = self.scalar(node, &format!("`threads` of {what}"))?;
                let n = text.parse::<u32>().ok().filter(|&n| n > 0);
                Some(n.ok_or_else(|| {
                    self.at(node, format!("`threads` of {what} must be a whole number >= 1, not `{text}`"))
                })?)
            }
            None => None,
        };
        let heavy = match fields.get("heavy") {
            Some(node) => match self.scalar(node, &format!("`heavy` of {what}"))?.as_str() {
                "true" => true,
                "false" => false,
                text => return Err(self.at(node, format!("`heavy` of {what} must be true or false, not `{text}`"))),
            },
            None => false,
        };
        let fanout = match fields.get("fanout") {
            Some(node) => match self.scalar(node, &format!("`fanout` of {what}"))?.as_str() {
                "shards" => true,
                text => return Err(self.at(node, format!("`fanout` of {what} must be `shards`, not `{text}`"))),
            },
            None => false,
        };
        Ok(Stage {
            name,
            loc: Loc::of(&key.span.start),
            desc,
            cmd,
            template,
            params: listed,
            deps,
            outs,
            metrics,
            threads,
            heavy,
            fanout,
        })
    }

    /// Replaces `${name}` by the param's value, with located errors: in a command quoted for
    /// where it stands (params are data, never code), in a path as it is.
    fn substitute(
        &self,
        node: &Node<'a>,
        raw: &str,
        what: &str,
        listed: &BTreeMap<String, String>,
        params: &BTreeMap<String, Param>,
        command: bool,
    ) -> Result<String, ConfigError> {
        let unterminated = |nth| self.err(self.locate(node, nth), "unterminated `${` (write `$${` for a literal `${`)");
        let value = |name: &str, nth| {
            if let Some(value) = listed.get(name) {
                return Ok(value.clone());
            }
            let loc = self.locate(node, nth);
            if params.contains_key(name) {
                return Err(self.err(loc, format!("{what} uses param `{name}` but does not list it in its `params`")));
            }
            let hint = if name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                format!(" (for the shell variable write `${name}` or `$${{{name}}}`)")
            } else {
                known(params)
            };
            Err(self.err(loc, format!("unknown param `{name}`{hint}")))
        };
        if !command {
            return render(raw, unterminated, value);
        }
        let unquotable = |name: &str, nth, why| {
            self.err(self.locate(node, nth), format!("{what} cannot pass param `{name}` to its command: {why}"))
        };
        crate::shell::render_command(raw, unterminated, value, unquotable)
    }

    /// Where the `nth` `${` of a scalar is in the source (the scalar's start if it cannot be found,
    /// e.g. when written with escapes).
    fn locate(&self, node: &Node, nth: usize) -> Loc {
        let (start, end) = (node.span.start, node.span.end);
        let raw: String = self.src.chars().skip(start.index()).take(end.index() - start.index()).collect();
        let Some((offset, _)) = raw.match_indices("${").nth(nth) else { return Loc::of(&start) };
        let mut loc = Loc::of(&start);
        for c in raw[..offset].chars() {
            if c == '\n' {
                loc = Loc { line: loc.line + 1, col: 1 };
            } else {
                loc.col += 1;
            }
        }
        loc
    }

    fn mapping<'n>(&self, node: &'n Node<'a>, what: &str) -> Result<Vec<(&'n Node<'a>, &'n Node<'a>)>, ConfigError> {
        match &node.data {
            YamlData::Mapping(m) => Ok(m.iter().collect()),
            _ => Err(self.at(node, format!("{what} must be a mapping (`key: value` lines)"))),
        }
    }

    fn list<'n>(&self, node: &'n Node<'a>, what: &str) -> Result<Vec<&'n Node<'a>>, ConfigError> {
        match &node.data {
            YamlData::Sequence(items) => Ok(items.iter().collect()),
            _ if is_null(node) => Ok(Vec::new()),
            _ => Err(self.at(node, format!("{what} must be a list (`[a, b]` or `- a` lines)"))),
        }
    }

    fn scalar(&self, node: &Node<'a>, what: &str) -> Result<String, ConfigError> {
        match &node.data {
            YamlData::Representation(text, ..) if !is_null(node) => Ok(text.to_string()),
            YamlData::Representation(..) => Err(self.at(node, format!("{what} has no value"))),
            YamlData::Tagged(..) => Err(self.at(node, format!("{what}: YAML tags are not supported"))),
            _ => Err(self.at(node, format!("{what} must be a single value, not a list or mapping"))),
        }
    }
}

/// A piece of a template: text (a `$${` in it already made the literal `${`), or a `${name}`,
/// with `nth` counting the `${` before it (escaped ones too: the position in the source is found by counting them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'t> {
    Text(String),
    Param { name: &'t str, nth: usize },
}

/// `text` taken apart into [`Piece`]s; `$${` is a literal `${` (for the shell). The error is the
/// `nth` of a `${` without `}`.
pub fn pieces(text: &str) -> Result<Vec<Piece<'_>>, usize> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    let mut nth = 0;
    while let Some(i) = rest.find("${") {
        let escaped = rest[..i].ends_with('$');
        literal.push_str(&rest[..i - usize::from(escaped)]);
        if escaped {
            literal.push_str("${");
            rest = &rest[i + 2..];
        } else {
            let Some(len) = rest[i + 2..].find('}') else { return Err(nth) };
            pieces.push(Piece::Text(std::mem::take(&mut literal)));
            pieces.push(Piece::Param { name: &rest[i + 2..i + 2 + len], nth });
            rest = &rest[i + 3 + len..];
        }
        nth += 1;
    }
    literal.push_str(rest);
    pieces.push(Piece::Text(literal));
    pieces.retain(|p| !matches!(p, Piece::Text(t) if t.is_empty()));
    Ok(pieces)
}

/// Replaces each `${name}` in `text` by `value(name, nth)` as it is (for paths; commands quote
/// their values: [`crate::shell::render_command`]). `unterminated(nth)` is the error for a `${`
/// without `}`.
pub fn render<E>(
    text: &str,
    unterminated: impl FnOnce(usize) -> E,
    mut value: impl FnMut(&str, usize) -> Result<String, E>,
) -> Result<String, E> {
    let mut out = String::with_capacity(text.len());
    for piece in pieces(text).map_err(unterminated)? {
        match piece {
            Piece::Text(t) => out.push_str(&t),
            Piece::Param { name, nth } => out.push_str(&value(name, nth)?),
        }
    }
    Ok(out)
}

fn is_null(node: &Node) -> bool {
    matches!(&node.data, YamlData::Representation(t, ScalarStyle::Plain, None) if matches!(t.as_ref(), "" | "~" | "null" | "Null" | "NULL"))
        || matches!(node.data, YamlData::BadValue)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn known(params: &BTreeMap<String, Param>) -> String {
    if params.is_empty() {
        " (the pipeline defines no `params`)".into()
    } else {
        format!(" (defined: {})", params.keys().cloned().collect::<Vec<_>>().join(", "))
    }
}

/// Lexical normalisation, so that `data/./train/` and `data/train` are the same path.
/// `None` for an empty path.
pub fn normalize(raw: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(raw.trim()).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Pipeline, ConfigError> {
        Pipeline::parse(Path::new("dir/pipeline.yaml"), src)
    }

    fn error(src: &str) -> String {
        parse(src).unwrap_err().to_string()
    }

    #[test]
    fn nested_aliases_cannot_multiply_into_megabytes() {
        // Nine lists of nine aliases of the list before: 9^9 nodes if every alias were cloned.
        let mut src = "a: &a [x, x, x, x, x, x, x, x, x]\n".to_string();
        for (prev, name) in
            ["a", "b", "c", "d", "e", "f", "g", "h"].iter().zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            src += &format!("{name}: &{name} [{}]\n", vec![format!("*{prev}"); 9].join(", "));
        }
        let e = error(&src);
        assert!(e.starts_with("dir/pipeline.yaml:") && e.contains("alias"), "{e}");
        // Aliases a pipeline uses (a shared list) still read.
        let p = parse("stages:\n  a:\n    cmd: x\n    deps: &d [p, q]\n  b:\n    cmd: y\n    deps: *d\n").unwrap();
        assert_eq!(p.stages[1].deps.len(), 2);
    }

    #[test]
    fn param_sets_and_settings_override_params_in_order() {
        let src = "params: {size: 150, data: a}\nparam_sets:\n  big: {size: 224}\nstages:\n  s:\n    cmd: x ${size} ${data}\n    params: [size, data]\n";
        let load = |set: Option<&str>, values: &[(&str, &str)]| {
            let o = Overrides {
                set: set.map(String::from),
                values: values.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            };
            Parser { file: Path::new("p.yaml"), src, overrides: &o }.pipeline()
        };
        assert_eq!(load(None, &[]).unwrap().stages[0].cmd, "x 150 a");
        assert_eq!(load(Some("big"), &[]).unwrap().stages[0].cmd, "x 224 a");
        assert_eq!(load(Some("big"), &[("size", "96"), ("data", "b")]).unwrap().stages[0].cmd, "x 96 b");
        let e = load(Some("huge"), &[]).unwrap_err().to_string();
        assert!(e.contains("--params huge") && e.contains("defined: big"), "{e}");
        let e = load(None, &[("sise", "1")]).unwrap_err().to_string();
        assert!(e.contains("unknown param `sise`") && e.contains("defined: data, size"), "{e}");
        let bad = src.replace("{size: 224}", "{sise: 224}");
        let e = Parser { file: Path::new("p.yaml"), src: &bad, overrides: &Overrides::default() }
            .pipeline()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.yaml:3:") && e.contains("unknown param `sise`"), "{e}");
    }

    #[test]
    fn parses_stages_in_order_with_params_substituted() {
        let p = parse(
            "params:\n  lr: 1e-3\n  name: 'a b'\nstages:\n  z:\n    cmd: train --lr ${lr} --out './out dir/'\n    \
             params: [lr]\n    deps: [data/./x/, ../shared]\n    outs: [out dir]\n    metrics: [out dir/m.json, m2.json]\n  \
             a:\n    cmd: echo $${HOME} $$HOME\n",
        )
        .unwrap();
        assert_eq!(p.dir, Path::new("dir"));
        assert_eq!(p.lock_path(), Path::new("dir/pipeline.lock"));
        assert_eq!(p.stages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["z", "a"]);
        let z = &p.stages[0];
        assert_eq!(z.cmd, "train --lr 1e-3 --out './out dir/'");
        assert_eq!(z.params, BTreeMap::from([("lr".to_string(), "1e-3".to_string())]));
        assert_eq!(z.deps.iter().map(|d| d.path.to_str().unwrap()).collect::<Vec<_>>(), ["data/x", "../shared"]);
        assert_eq!(z.deps[1].loc, Loc { line: 8, col: 23 });
        let written: Vec<_> = z.written().map(|o| o.path.to_str().unwrap()).collect();
        assert_eq!(written, ["out dir", "m2.json"]);
        assert_eq!(p.stages[1].cmd, "echo ${HOME} $$HOME");
    }

    #[test]
    fn unknown_param_points_at_its_use() {
        let src =
            "params:\n  lr: 1\nstages:\n  a:\n    params: [lr]\n    cmd: >-\n      train ${lr}\n      --x ${nope}\n";
        assert_eq!(error(src), "dir/pipeline.yaml:8:11: unknown param `nope` (defined: lr)");
        let src = "params:\n  lr: 1\nstages:\n  a:\n    cmd: \"train ${lr}\"\n";
        assert_eq!(
            error(src),
            "dir/pipeline.yaml:5:17: stage `a` uses param `lr` but does not list it in its `params`"
        );
        let src = "params:\n  lr: 1\nstages:\n  a:\n    cmd: x\n    params:\n      - lr\n      - epochs\n";
        assert_eq!(error(src), "dir/pipeline.yaml:8:9: stage `a` lists unknown param `epochs` (defined: lr)");
        assert!(error("stages:\n  a:\n    cmd: echo ${HOME}\n").contains("3:15: unknown param `HOME` (for the shell"));
        assert!(error("stages:\n  a:\n    cmd: echo ${x\n").contains("3:15: unterminated"));
    }

    #[test]
    fn malformed_files_and_unknown_keys_are_located() {
        assert!(error("stages:\n  a:\n    cmd: [x\n").starts_with("dir/pipeline.yaml:4:1: invalid YAML"));
        assert!(error("stages:\n  a:\n    cmd: x\n   deps: []\n").starts_with("dir/pipeline.yaml:4:"));
        assert_eq!(
            error("stages:\n  a:\n    cmd: x\n    dep: [y]\n"),
            "dir/pipeline.yaml:4:5: unknown key `dep` in stage `a` (expected one of cmd, deps, params, outs, metrics, desc, threads, heavy, fanout)"
        );
        assert!(error("stage:\n  a: {}\n").starts_with("dir/pipeline.yaml:1:1: unknown key `stage`"));
        assert!(error("stages:\n  a:\n    cmd: x\n  a:\n    cmd: y\n").contains("4:3: invalid YAML: duplicated key"));
        assert!(error("stages:\n  a:\n    deps: [x]\n").contains("2:3: stage `a` has no `cmd`"));
        assert!(error("stages:\n  a:\n    cmd: x\n    outs: x\n").contains("4:11: `outs` of stage `a` must be a list"));
        assert!(error("stages:\n  a:\n    cmd: x\n    outs: [../x]\n").contains("4:12: `outs` path `../x` must stay"));
        assert!(error("").contains("1:1: empty pipeline"));
        assert!(error("params: {}\n").contains("no `stages:`"));
        assert!(error("params:\n  a: [1]\nstages: {}\n").contains("2:6: param `a` must be a single value"));
    }

    #[test]
    fn outs_may_not_be_the_pipelines_own_files() {
        let out = |o: &str| error(&format!("stages:\n  a:\n    cmd: x\n    outs: [{o}]\n"));
        assert_eq!(
            out("pipeline.yaml"),
            "dir/pipeline.yaml:4:12: `outs` path `pipeline.yaml` would delete the pipeline file `pipeline.yaml` \
             (outs are deleted before their stage runs)"
        );
        assert!(out("./pipeline.lock").contains("4:12: `outs` path `./pipeline.lock` would delete its lock file"));
        assert!(out(".pipeline/x").contains("would delete its run lock and hash cache `.pipeline`"));
        let metrics = error("stages:\n  a:\n    cmd: x\n    metrics: [.pipeline]\n");
        assert!(metrics.contains("4:15: `metrics` path `.pipeline` would delete"), "{metrics}");
        // Reading them is fine, and so is a name that merely starts like them.
        let p =
            parse("stages:\n  a:\n    cmd: x\n    deps: [pipeline.yaml]\n    outs: [pipeline.yaml.bak, .pipelines]\n");
        assert_eq!(p.unwrap().stages[0].outs.len(), 2);
    }

    #[test]
    fn threads_and_folder_outs() {
        let p = parse(
            "stages:\n  a:\n    cmd: x\n    outs: [d/, f]\n    threads: 4\n    heavy: true\n    fanout: shards\n",
        )
        .unwrap();
        let a = &p.stages[0];
        assert_eq!((a.threads, a.heavy, a.fanout), (Some(4), true, true));
        assert!(!parse("stages:\n  a:\n    cmd: x\n").unwrap().stages[0].heavy);
        assert!(
            error("stages:\n  a:\n    cmd: x\n    heavy: yes\n")
                .contains("4:12: `heavy` of stage `a` must be true or false")
        );
        assert!(
            error("stages:\n  a:\n    cmd: x\n    fanout: 4\n")
                .contains("4:13: `fanout` of stage `a` must be `shards`, not `4`")
        );
        assert_eq!(
            a.outs.iter().map(|o| (o.path.to_str().unwrap(), o.folder)).collect::<Vec<_>>(),
            [("d", true), ("f", false)]
        );
        assert!(
            error("stages:\n  a:\n    cmd: x\n    threads: 0\n")
                .contains("4:14: `threads` of stage `a` must be a whole number >= 1, not `0`")
        );
    }

    #[test]
    fn typed_params_are_checked_in_the_file_in_sets_and_at_set() {
        let src = "params:\n  size: {value: 150, type: int}\n  pre: {value: caffe, choices: [caffe, rescale]}\n\
                   param_sets:\n  big: {size: 224}\nstages:\n  s:\n    cmd: x ${size} ${pre}\n    params: [size, pre]\n";
        let load = |src: &str, values: &[(&str, &str)]| {
            let o =
                Overrides { set: None, values: values.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
            Parser { file: Path::new("p.yaml"), src, overrides: &o }.pipeline()
        };
        let p = load(src, &[]).unwrap();
        assert_eq!((p.stages[0].cmd.as_str(), &p.params["size"].kind), ("x 150 caffe", &ParamType::Int));
        assert_eq!(load(src, &[("size", "96"), ("pre", "rescale")]).unwrap().stages[0].cmd, "x 96 rescale");
        let e = load(src, &[("size", "abc")]).unwrap_err().to_string();
        assert_eq!(e, "p.yaml:2:3: --set size=abc: `abc` is not a whole number (type: int)");
        let e = load(src, &[("pre", "bgr")]).unwrap_err().to_string();
        assert!(e.contains("--set pre=bgr: `bgr` is not one of caffe, rescale"), "{e}");
        let e = load(&src.replace("value: 150", "value: 15O"), &[]).unwrap_err().to_string();
        assert_eq!(e, "p.yaml:2:17: param `size`: `15O` is not a whole number (type: int)");
        let e = load(&src.replace("{size: 224}", "{size: big}"), &[]).unwrap_err().to_string();
        assert!(e.starts_with("p.yaml:5:15: param `size` of set `big`: `big` is not a whole number"), "{e}");
        let e = load(&src.replace("type: int", "type: integer"), &[]).unwrap_err().to_string();
        assert!(
            e.starts_with("p.yaml:2:28: unknown type `integer` for param `size` (expected int, float, bool, str)"),
            "{e}"
        );
        let e = load(&src.replace("value: 150, ", ""), &[]).unwrap_err().to_string();
        assert!(e.starts_with("p.yaml:2:9: param `size` has no `value`"), "{e}");
        let e = load(&src.replace("type: int", "kind: int"), &[]).unwrap_err().to_string();
        assert!(e.contains("2:22: unknown key `kind` in param `size`"), "{e}");
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize("./a/b/../c/"), Some(PathBuf::from("a/c")));
        assert_eq!(normalize("../a"), Some(PathBuf::from("../a")));
        assert_eq!(normalize("/x/./y"), Some(PathBuf::from("/x/y")));
        assert_eq!(normalize(" . "), None);
    }
}
