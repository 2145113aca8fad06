//! The stage graph: stage B depends on stage A when one of B's deps is, contains or lies inside
//! one of A's outs. Also checks that no two outs overlap and that there is no cycle.

use std::collections::BTreeSet;
use std::path::Path;

use crate::spec::{ConfigError, Loc, Pipeline};

#[derive(Debug, Clone)]
pub struct Dag {
    /// For each stage, the stages it depends on (sorted, no duplicates).
    pub upstream: Vec<Vec<usize>>,
    /// For each stage, the stages that depend on it.
    pub downstream: Vec<Vec<usize>>,
    /// A topological order; independent stages keep their order in the file.
    pub order: Vec<usize>,
}

/// Whether one path is the other or lies inside it.
pub fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

impl Dag {
    pub fn build(p: &Pipeline) -> Result<Dag, ConfigError> {
        let n = p.stages.len();
        let written: Vec<(usize, &crate::spec::PathSpec)> =
            p.stages.iter().enumerate().flat_map(|(i, s)| s.written().map(move |o| (i, o))).collect();
        for (k, (i, a)) in written.iter().enumerate() {
            for (j, b) in &written[..k] {
                if overlaps(&a.path, &b.path) {
                    let (si, sj) = (&p.stages[*i].name, &p.stages[*j].name);
                    return Err(p.error(
                        a.loc,
                        format!(
                            "`{}` of stage `{si}` overlaps `{}` of stage `{sj}` (line {}): each path must have one writer",
                            a.path.display(),
                            b.path.display(),
                            b.loc.line
                        ),
                    ));
                }
            }
        }

        // edge (from, to) with the location of the dep that makes it
        let mut upstream = vec![BTreeSet::new(); n];
        let mut edge_loc = std::collections::HashMap::new();
        for (s, stage) in p.stages.iter().enumerate() {
            for dep in &stage.deps {
                for (w, out) in &written {
                    if overlaps(&dep.path, &out.path) {
                        if *w == s {
                            return Err(p.error(
                                dep.loc,
                                format!(
                                    "cycle: stage `{}` depends on its own out `{}`",
                                    stage.name,
                                    out.path.display()
                                ),
                            ));
                        }
                        upstream[s].insert(*w);
                        edge_loc.entry((*w, s)).or_insert(dep.loc);
                    }
                }
            }
        }
        let upstream: Vec<Vec<usize>> = upstream.into_iter().map(|u| u.into_iter().collect()).collect();
        let mut downstream = vec![Vec::new(); n];
        for (s, ups) in upstream.iter().enumerate() {
            for &u in ups {
                downstream[u].push(s);
            }
        }

        // Kahn's algorithm, always taking the first ready stage in file order.
        let mut missing: Vec<usize> = upstream.iter().map(Vec::len).collect();
        let mut ready: BTreeSet<usize> = (0..n).filter(|&s| missing[s] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(s) = ready.pop_first() {
            order.push(s);
            for &d in &downstream[s] {
                missing[d] -= 1;
                if missing[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        if order.len() < n {
            let cycle = find_cycle(&upstream, &missing);
            let names: Vec<&str> = cycle.iter().map(|&s| p.stages[s].name.as_str()).collect();
            let loc: Loc = edge_loc[&(cycle[0], cycle[1])];
            return Err(p.error(
                loc,
                format!("cycle between stages: {} (each writes what the next one reads)", names.join(" -> ")),
            ));
        }
        Ok(Dag { upstream, downstream, order })
    }

    /// `stages` and everything they depend on, directly or not.
    pub fn with_upstream(&self, stages: impl IntoIterator<Item = usize>) -> BTreeSet<usize> {
        closure(stages, &self.upstream)
    }

    /// `stages` and everything that depends on them, directly or not.
    pub fn with_downstream(&self, stages: impl IntoIterator<Item = usize>) -> BTreeSet<usize> {
        closure(stages, &self.downstream)
    }
}

fn closure(start: impl IntoIterator<Item = usize>, next: &[Vec<usize>]) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<usize> = start.into_iter().collect();
    while let Some(s) = todo.pop() {
        if seen.insert(s) {
            todo.extend(&next[s]);
        }
    }
    seen
}

/// A cycle among the stages left over by Kahn's algorithm, as `[a, b, ..., a]` where each stage
/// is upstream of the next.
fn find_cycle(upstream: &[Vec<usize>], missing: &[usize]) -> Vec<usize> {
    // Walk upstream from a stuck stage until a stage repeats: every stuck stage has a stuck upstream.
    let mut path = vec![(0..missing.len()).find(|&s| missing[s] > 0).expect("a stuck stage")];
    loop {
        let here = *path.last().unwrap();
        let up = *upstream[here].iter().find(|&&u| missing[u] > 0).expect("a stuck upstream");
        if let Some(pos) = path.iter().position(|&s| s == up) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(up);
            cycle.reverse(); // upstream first
            return cycle;
        }
        path.push(up);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dag(src: &str) -> Result<Dag, ConfigError> {
        Dag::build(&Pipeline::parse(Path::new("p.yaml"), src).unwrap())
    }

    #[test]
    fn edges_follow_paths_and_order_is_stable() {
        let d = dag("stages:\n  c:\n    cmd: x\n    deps: [a/file, b]\n    outs: [c]\n  \
                     a:\n    cmd: x\n    outs: [a]\n  b:\n    cmd: x\n    deps: [raw]\n    outs: [b/x, b/y]\n  \
                     d:\n    cmd: x\n    deps: [a, c]\n    outs: [out/d]\n")
        .unwrap();
        assert_eq!(d.upstream, vec![vec![1, 2], vec![], vec![], vec![0, 1]]);
        assert_eq!(d.order, vec![1, 2, 0, 3]);
        assert_eq!(d.with_downstream([1]), BTreeSet::from([0, 1, 3]));
        assert_eq!(d.with_upstream([0]), BTreeSet::from([0, 1, 2]));
    }

    #[test]
    fn cycles_and_overlapping_outs_are_located() {
        let err = dag("stages:\n  a:\n    cmd: x\n    deps: [b]\n    outs: [a]\n  \
                       b:\n    cmd: x\n    deps: [a/f]\n    outs: [b]\n")
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.yaml:8:12: cycle between stages: a -> b -> a (each writes what the next one reads)"
        );
        let err = dag("stages:\n  a:\n    cmd: x\n    deps: [a/in]\n    outs: [a]\n").unwrap_err();
        assert_eq!(err.to_string(), "p.yaml:4:12: cycle: stage `a` depends on its own out `a`");
        let err = dag("stages:\n  a:\n    cmd: x\n    outs: [o]\n  b:\n    cmd: x\n    outs: [o/x]\n").unwrap_err();
        assert!(err.to_string().starts_with("p.yaml:7:12: `o/x` of stage `b` overlaps `o` of stage `a` (line 4)"));
    }
}
