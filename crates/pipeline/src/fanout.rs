//! Which stages an export may fan out: a stage declared `fanout: shards` in pipeline.yaml runs a
//! program that can split its work (like `bottleneck`): `PROGRAM ARGS --out DIR --shard i/n`
//! writes slice i into DIR, and `PROGRAM --merge DIR... --out OUT` joins the slices into byte for
//! byte what the one command writes. Only a stage whose command is a single simple command
//! qualifies (nothing else it does could be split), and only when its one `--out` is its one out;
//! anything else stays one job.

use std::ops::Range;

use crate::shell;
use crate::spec::{Stage, normalize, render};

/// A `fanout: shards` stage's command, taken apart for sharding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fanout<'s> {
    template: &'s str,
    /// Where the program word ends: assignments and the program start the merge command too.
    program_end: usize,
    /// The part of the command that names the output (the value, or the whole `--out=X`).
    out_span: Range<usize>,
    /// Written as `--out=X`.
    joined: bool,
    /// The `--out` value as written, unquoted, with its `${param}`s.
    out: String,
}

impl<'s> Fanout<'s> {
    /// The stage's fan-out, if it is declared `fanout: shards` and its command is a plain
    /// `PROGRAM ... --out O ...` with O its only out.
    pub fn detect(stage: &'s Stage) -> Option<Fanout<'s>> {
        if !stage.fanout {
            return None;
        }
        let template = stage.template.as_str();
        let words = shell::simple_words(template)?;
        let first = words.iter().position(|w| !shell::is_assignment(&w.text))?;
        let mut out = Vec::new();
        let mut args = words[first + 1..].iter();
        while let Some(w) = args.next() {
            let (flag, value) = match w.text.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
                _ => (w.text.as_str(), None),
            };
            match flag {
                "--out" if w.text.contains('=') => out.push((w.span.clone(), true, value?)),
                "--out" => {
                    let v = args.next()?;
                    out.push((v.span.clone(), false, v.text.clone()));
                }
                "--shard" | "--merge" | "-h" | "--help" | "-V" | "--version" => return None,
                _ => {}
            }
        }
        let [(out_span, joined, out)] = <[_; 1]>::try_from(out).ok()?;
        // Its --out must be the stage's one out: the merge writes it, the shards write elsewhere.
        let rendered = render(&out, |_| (), |name, _| stage.params.get(name).cloned().ok_or(())).ok()?;
        let mut written = stage.written();
        let only = written.next().filter(|_| written.next().is_none())?;
        if normalize(&rendered)? != only.path {
            return None;
        }
        Some(Fanout { template, program_end: words[first].span.end, out_span, joined, out })
    }

    /// A shard's command is `before + SHARD_DIR + after + " --shard i/n"`.
    pub fn shard_parts(&self) -> (String, &'s str) {
        let flag = if self.joined { "--out=" } else { "" };
        (format!("{}{flag}", &self.template[..self.out_span.start]), &self.template[self.out_span.end..])
    }

    /// The merge command (a template: params as `${name}`), joining `shard_dirs` into the stage's out.
    pub fn merge_template(&self, shard_dirs: &[String]) -> String {
        let dirs: Vec<String> = shard_dirs.iter().map(|d| shell::quote(d)).collect();
        format!("{} --merge {} --out {}", &self.template[..self.program_end], dirs.join(" "), shell::quote(&self.out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Pipeline;
    use std::path::Path;

    fn stage(cmd: &str, outs: &str) -> Stage {
        let src = format!(
            "params:\n  o: feats\nstages:\n  s:\n    cmd: {cmd}\n    params: [o]\n    outs: [{outs}]\n    fanout: shards\n"
        );
        Pipeline::parse(Path::new("p.yaml"), &src).unwrap().stages.remove(0)
    }

    #[test]
    fn a_plain_bottleneck_command_is_split_at_its_out() {
        let s = stage("X=1 ./bin/bottleneck --data d --model=m --out ${o}/train --size 32", "feats/train/");
        let f = Fanout::detect(&s).unwrap();
        let (before, after) = f.shard_parts();
        assert_eq!(format!("{before}SHARD{after}"), "X=1 ./bin/bottleneck --data d --model=m --out SHARD --size 32");
        assert_eq!(
            f.merge_template(&["a/0".into(), "a/1".into()]),
            "X=1 ./bin/bottleneck --merge a/0 a/1 --out '${o}/train'"
        );

        let s = stage("Y=2 'bottleneck' --out='feats/x y' --data d --model m", "'feats/x y'");
        let f = Fanout::detect(&s).unwrap();
        let (before, after) = f.shard_parts();
        assert_eq!(format!("{before}S{after}"), "Y=2 'bottleneck' --out=S --data d --model m");
        assert_eq!(f.merge_template(&["s".into()]), "Y=2 'bottleneck' --merge s --out 'feats/x y'");
    }

    #[test]
    fn anything_else_stays_one_job() {
        for (cmd, outs) in [
            ("bottleneck --data d --model m --out f && echo done", "f"),
            ("bottleneck --merge a b --out f", "f"),
            ("bottleneck --data d --model m --out f --shard 0/2", "f"),
            ("bottleneck --data d --model m --out other", "f"),
            ("bottleneck --data d --model m --out f --out f", "f"),
            ("bottleneck --data d --model m --out f", "f, g"),
            ("\"'bottleneck --data d --model m --out f'\"", "f"),
        ] {
            assert_eq!(Fanout::detect(&stage(cmd, outs)), None, "{cmd}");
        }
        // Only a stage that declares it: the runner knows no program by name.
        let mut s = stage("bottleneck --data d --model m --out f", "f");
        assert!(Fanout::detect(&s).is_some());
        s.fanout = false;
        assert_eq!(Fanout::detect(&s), None);
    }
}
