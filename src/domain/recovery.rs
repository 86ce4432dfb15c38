//! The recovery of specialised procedures ("Fachverfahren"): the stage machine, the security
//! gates and the town-by-town rollout, as plain domain code. The gates are enforced here and
//! nowhere else; storage and pages call `check_step` and `check_rollout`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Where a procedure stands. Order matters: later is further.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Not running.
    Down,
    /// Forensic check under way.
    UnderReview,
    /// Checked and classified clean ("unbedenklich").
    Cleared,
    /// The new security policies are in force.
    Hardened,
    /// Released for basic operation; towns may roll it out.
    Released,
    /// Back to full function.
    Normal,
}

impl Stage {
    pub const ALL: [Stage; 6] =
        [Stage::Down, Stage::UnderReview, Stage::Cleared, Stage::Hardened, Stage::Released, Stage::Normal];
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Down => "down",
            Stage::UnderReview => "under_review",
            Stage::Cleared => "cleared",
            Stage::Hardened => "hardened",
            Stage::Released => "released",
            Stage::Normal => "normal",
        }
    }
    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|x| x.as_str() == s)
    }
    fn next(self) -> Option<Stage> {
        Stage::ALL.iter().position(|s| *s == self).and_then(|i| Stage::ALL.get(i + 1).copied())
    }
}

/// How far a released procedure is live in one town.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rollout {
    NotStarted,
    /// Pilot of basic operation.
    Pilot,
    /// Basic operation (reduced functions).
    Basic,
    Normal,
}

impl Rollout {
    pub const ALL: [Rollout; 4] = [Rollout::NotStarted, Rollout::Pilot, Rollout::Basic, Rollout::Normal];
    pub fn as_str(self) -> &'static str {
        match self {
            Rollout::NotStarted => "not_started",
            Rollout::Pilot => "pilot",
            Rollout::Basic => "basic",
            Rollout::Normal => "normal",
        }
    }
    pub fn parse(s: &str) -> Option<Rollout> {
        Rollout::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// What a `Procedure` can be: a specialised procedure or shared infrastructure.
pub const PROCEDURE_KINDS: [&str; 2] = ["procedure", "infrastructure"];

/// A specialised procedure or a piece of shared infrastructure under recovery.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Procedure {
    pub slug: String,
    pub name: String,
    /// `procedure` or `infrastructure`.
    pub kind: String,
    /// Service area it serves (see domain::SERVICE_AREAS), empty for infrastructure.
    pub area: String,
    /// Lower numbers are restarted first.
    pub priority: i64,
    pub stage: Stage,
    pub stage_since: String,
    /// What basic operation lacks.
    pub missing_functions: Vec<String>,
    /// What basic operation offers (read before what it lacks).
    #[serde(default)]
    pub offered_functions: Vec<String>,
    pub expected_release: String,
    pub expected_normal: String,
    pub depends_on: Vec<String>,
    pub version: i64,
}

/// How far a procedure is live in one town.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub procedure_slug: String,
    pub municipality_ags: String,
    pub stage: Rollout,
    pub since: String,
    /// When the operators expect the next step there (YYYY-MM-DD or empty).
    pub expected_date: String,
    pub author: String,
}

/// The gate view of all procedures.
pub fn states(procedures: &[Procedure]) -> BTreeMap<String, ProcedureState> {
    procedures
        .iter()
        .map(|p| (p.slug.clone(), ProcedureState { stage: p.stage, depends_on: p.depends_on.clone() }))
        .collect()
}

/// What the gate rules need to know about a procedure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcedureState {
    pub stage: Stage,
    /// Procedures and infrastructure this one needs.
    pub depends_on: Vec<String>,
}

/// A condition a step does not meet, for the operator to read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "condition", rename_all = "snake_case")]
pub enum Unmet {
    /// Forward steps go one stage at a time.
    NotNextStage {
        from: Stage,
        to: Stage,
    },
    NotCleared,
    NotHardened,
    DependencyNotReleased {
        dependency: String,
        stage: Stage,
    },
    UnknownDependency {
        dependency: String,
    },
    /// A step back needs a reason for the journal.
    ReasonMissing,
    SameStage,
    ProcedureNotReleased {
        stage: Stage,
    },
    /// Full operation in a town needs the procedure back to normal.
    ProcedureNotNormal {
        stage: Stage,
    },
}

/// Whether `name` may move from its current stage to `to`. Returns every unmet condition.
/// Forward: exactly the next stage; `released` (and beyond) only after cleared and hardened and
/// with every dependency released. Backward: any earlier stage, with a reason.
pub fn check_step(
    all: &BTreeMap<String, ProcedureState>,
    name: &str,
    to: Stage,
    reason: &str,
) -> Result<(), Vec<Unmet>> {
    let p = &all[name];
    let mut unmet = Vec::new();
    if to == p.stage {
        unmet.push(Unmet::SameStage);
    } else if to < p.stage {
        if reason.trim().is_empty() {
            unmet.push(Unmet::ReasonMissing);
        }
    } else {
        if p.stage.next() != Some(to) {
            unmet.push(Unmet::NotNextStage { from: p.stage, to });
        }
        if to >= Stage::Released {
            if p.stage < Stage::Cleared {
                unmet.push(Unmet::NotCleared);
            }
            if p.stage < Stage::Hardened {
                unmet.push(Unmet::NotHardened);
            }
            for d in &p.depends_on {
                match all.get(d) {
                    None => unmet.push(Unmet::UnknownDependency { dependency: d.clone() }),
                    Some(dep) if dep.stage < Stage::Released => {
                        unmet.push(Unmet::DependencyNotReleased { dependency: d.clone(), stage: dep.stage })
                    }
                    Some(_) => {}
                }
            }
        }
    }
    if unmet.is_empty() { Ok(()) } else { Err(unmet) }
}

/// Whether a town may move to `to` for a procedure at `stage`. Rolling back is always allowed.
pub fn check_rollout(stage: Stage, from: Rollout, to: Rollout) -> Result<(), Vec<Unmet>> {
    if to <= from {
        return Ok(());
    }
    if stage < Stage::Released {
        return Err(vec![Unmet::ProcedureNotReleased { stage }]);
    }
    if to == Rollout::Normal && stage < Stage::Normal {
        return Err(vec![Unmet::ProcedureNotNormal { stage }]);
    }
    Ok(())
}

/// The procedures that must fall back when `name` steps back to `to`: everything released that
/// depends on it, directly or not, goes back to `hardened` (its gate no longer holds). Returns
/// the new stages; the caller journals them and resets the rollouts they imply.
pub fn cascade_back(all: &BTreeMap<String, ProcedureState>, name: &str, to: Stage) -> BTreeMap<String, Stage> {
    let mut changed = BTreeMap::new();
    changed.insert(name.to_string(), to);
    if to >= Stage::Released {
        return changed;
    }
    let mut queue = vec![name.to_string()];
    while let Some(fallen) = queue.pop() {
        for (other, p) in all {
            let current = changed.get(other).copied().unwrap_or(p.stage);
            if p.depends_on.contains(&fallen) && current >= Stage::Released {
                changed.insert(other.clone(), Stage::Hardened);
                queue.push(other.clone());
            }
        }
    }
    changed
}

/// The rollout a town may still have for a procedure at `stage` (rollouts fall back with it).
pub fn rollout_allowed(stage: Stage, rollout: Rollout) -> Rollout {
    match stage {
        s if s < Stage::Released => Rollout::NotStarted,
        Stage::Released => rollout.min(Rollout::Basic),
        _ => rollout,
    }
}

/// A dependency cycle, named in order (`a → b → a`), if adding `depends_on` to `name` creates one.
pub fn find_cycle(all: &BTreeMap<String, Vec<String>>, name: &str, depends_on: &[String]) -> Option<Vec<String>> {
    // Depth-first search from each new dependency back to `name`.
    fn walk(
        all: &BTreeMap<String, Vec<String>>,
        at: &str,
        target: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        path.push(at.to_string());
        if at == target {
            return true;
        }
        if seen.insert(at.to_string()) {
            for next in all.get(at).into_iter().flatten() {
                if walk(all, next, target, path, seen) {
                    return true;
                }
            }
        }
        path.pop();
        false
    }
    for d in depends_on {
        let mut path = vec![name.to_string()];
        let mut seen = BTreeSet::new();
        if walk(all, d, name, &mut path, &mut seen) {
            return Some(path);
        }
    }
    None
}

/// The availability a rollout allows for a service that needs this procedure in this town:
/// never more than the rollout. Pilot and basic operation are "limited".
pub fn level_for(stage: Stage, rollout: Rollout) -> crate::domain::Level {
    use crate::domain::Level;
    match rollout_allowed(stage, rollout) {
        Rollout::NotStarted => Level::Unavailable,
        Rollout::Pilot | Rollout::Basic => Level::Limited,
        Rollout::Normal => Level::Normal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Level;

    fn world(entries: &[(&str, Stage, &[&str])]) -> BTreeMap<String, ProcedureState> {
        entries
            .iter()
            .map(|(n, s, d)| {
                (n.to_string(), ProcedureState { stage: *s, depends_on: d.iter().map(|x| x.to_string()).collect() })
            })
            .collect()
    }

    #[test]
    fn release_needs_cleared_hardened_and_released_dependencies() {
        let w = world(&[
            ("kfz", Stage::Hardened, &["ad", "netz"]),
            ("ad", Stage::Released, &[]),
            ("netz", Stage::Cleared, &[]),
        ]);
        assert_eq!(
            check_step(&w, "kfz", Stage::Released, ""),
            Err(vec![Unmet::DependencyNotReleased { dependency: "netz".into(), stage: Stage::Cleared }])
        );
        let w = world(&[("kfz", Stage::UnderReview, &["gone"])]);
        let err = check_step(&w, "kfz", Stage::Released, "").unwrap_err();
        assert!(err.contains(&Unmet::NotCleared));
        assert!(err.contains(&Unmet::NotHardened));
        assert!(err.contains(&Unmet::NotNextStage { from: Stage::UnderReview, to: Stage::Released }));
        assert!(err.contains(&Unmet::UnknownDependency { dependency: "gone".into() }));
        let w = world(&[("kfz", Stage::Hardened, &["ad"]), ("ad", Stage::Normal, &[])]);
        assert_eq!(check_step(&w, "kfz", Stage::Released, ""), Ok(()));
    }

    #[test]
    fn every_forward_step_is_one_stage() {
        for (i, from) in Stage::ALL.iter().enumerate() {
            for (j, to) in Stage::ALL.iter().enumerate() {
                let w = world(&[("p", *from, &[])]);
                let r = check_step(&w, "p", *to, "Befund");
                match j.cmp(&i) {
                    std::cmp::Ordering::Equal => assert_eq!(r, Err(vec![Unmet::SameStage])),
                    std::cmp::Ordering::Less => assert_eq!(r, Ok(()), "back {from:?}→{to:?}"),
                    std::cmp::Ordering::Greater if j == i + 1 => assert_eq!(r, Ok(()), "{from:?}→{to:?}"),
                    std::cmp::Ordering::Greater => assert!(r.is_err(), "{from:?}→{to:?}"),
                }
            }
        }
    }

    #[test]
    fn steps_back_need_a_reason_and_pull_dependents_back() {
        let w = world(&[
            ("ad", Stage::Released, &[]),
            ("melde", Stage::Released, &["ad"]),
            ("kfz", Stage::Normal, &["melde"]),
            ("kasse", Stage::Released, &[]),
        ]);
        assert_eq!(check_step(&w, "ad", Stage::UnderReview, " "), Err(vec![Unmet::ReasonMissing]));
        assert_eq!(check_step(&w, "ad", Stage::UnderReview, "neue Indikatoren gefunden"), Ok(()));
        let changed = cascade_back(&w, "ad", Stage::UnderReview);
        assert_eq!(changed["ad"], Stage::UnderReview);
        assert_eq!(changed["melde"], Stage::Hardened);
        assert_eq!(changed["kfz"], Stage::Hardened);
        assert!(!changed.contains_key("kasse"));
    }

    #[test]
    fn rollout_only_after_release_and_full_operation_only_when_normal() {
        assert!(check_rollout(Stage::Hardened, Rollout::NotStarted, Rollout::Pilot).is_err());
        assert!(check_rollout(Stage::Released, Rollout::NotStarted, Rollout::Pilot).is_ok());
        assert!(check_rollout(Stage::Released, Rollout::Basic, Rollout::Normal).is_err());
        assert!(check_rollout(Stage::Normal, Rollout::Basic, Rollout::Normal).is_ok());
        assert!(
            check_rollout(Stage::Down, Rollout::Basic, Rollout::NotStarted).is_ok(),
            "rolling back is always allowed"
        );
    }

    #[test]
    fn cycles_are_found_and_named() {
        let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
        deps.insert("a".into(), vec!["b".into()]);
        deps.insert("b".into(), vec!["c".into()]);
        deps.insert("c".into(), vec![]);
        assert_eq!(find_cycle(&deps, "c", &["a".into()]), Some(vec!["c".into(), "a".into(), "b".into(), "c".into()]));
        assert_eq!(find_cycle(&deps, "a", &["c".into()]), None);
        assert_eq!(find_cycle(&deps, "a", &["a".into()]), Some(vec!["a".into(), "a".into()]));
    }

    /// A small deterministic generator, so the property tests need no extra crate and replay.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
            xs[(self.next() % xs.len() as u64) as usize]
        }
    }

    /// Property: whatever sequence of allowed steps and rollouts happens, no procedure is ever
    /// released without its dependencies released, and no town's derived availability claims
    /// more than its rollout and the procedure's stage allow.
    #[test]
    fn random_walks_never_break_a_gate() {
        let names = ["ad", "netz", "melde", "kfz", "kasse"];
        let deps: &[(&str, &[&str])] = &[("melde", &["ad", "netz"]), ("kfz", &["melde"]), ("kasse", &["netz"])];
        let (mut releases, mut full_rollouts, mut cascades) = (0, 0, 0);
        for seed in 1..300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut w: BTreeMap<String, ProcedureState> = names
                .iter()
                .map(|n| {
                    let d = deps
                        .iter()
                        .find(|(x, _)| x == n)
                        .map(|(_, d)| d.iter().map(|s| s.to_string()).collect())
                        .unwrap_or_default();
                    (n.to_string(), ProcedureState { stage: Stage::Down, depends_on: d })
                })
                .collect();
            let mut rollouts: BTreeMap<(String, u8), Rollout> = BTreeMap::new();
            for _ in 0..200 {
                let name = rng.pick(&names).to_string();
                if rng.next().is_multiple_of(3) {
                    let town = (rng.next() % 4) as u8;
                    let from = *rollouts.get(&(name.clone(), town)).unwrap_or(&Rollout::NotStarted);
                    // Mostly forward, sometimes anywhere, so walks reach full operation and fall back too.
                    let to = if rng.next().is_multiple_of(4) {
                        rng.pick(&Rollout::ALL)
                    } else {
                        Rollout::ALL[(from as usize + 1).min(3)]
                    };
                    if check_rollout(w[&name].stage, from, to).is_ok() {
                        rollouts.insert((name, town), to);
                    }
                } else {
                    let current = w[&name].stage;
                    let to = if rng.next().is_multiple_of(6) {
                        rng.pick(&Stage::ALL)
                    } else {
                        current.next().unwrap_or(current)
                    };
                    if check_step(&w, &name, to, "Befund").is_ok() {
                        let changed = cascade_back(&w, &name, to);
                        cascades += (changed.len() > 1) as u32;
                        releases += (to == Stage::Released) as u32;
                        for (n, s) in changed {
                            w.get_mut(&n).unwrap().stage = s;
                        }
                        // Rollouts fall back with their procedure.
                        for ((n, _), r) in rollouts.iter_mut() {
                            *r = rollout_allowed(w[n].stage, *r);
                        }
                    }
                }
                for (n, p) in &w {
                    if p.stage >= Stage::Released {
                        for d in &p.depends_on {
                            assert!(
                                w[d].stage >= Stage::Released,
                                "seed {seed}: {n} released while {d} is {:?}",
                                w[d].stage
                            );
                        }
                    }
                }
                for ((n, _), r) in &rollouts {
                    let stage = w[n].stage;
                    if stage < Stage::Released {
                        assert_eq!(*r, Rollout::NotStarted, "seed {seed}: {n} rolled out while {stage:?}");
                    }
                    let level = level_for(stage, *r);
                    assert!(level >= level_for(stage, Rollout::Normal), "never better than the procedure allows");
                    if *r == Rollout::NotStarted || stage < Stage::Released {
                        assert_eq!(level, Level::Unavailable);
                    }
                    if level == Level::Normal {
                        assert!(stage >= Stage::Normal && *r == Rollout::Normal);
                        full_rollouts += 1;
                    }
                }
            }
        }
        // The walks must actually reach the interesting states, or the test proves nothing.
        assert!(releases > 100 && full_rollouts > 100 && cascades > 10, "{releases} {full_rollouts} {cascades}");
    }
}
