//! Choosing a node: hard requirements first (they can never be undone), then
//! power-of-two-choices over the client's own load cost, with the directory's score as prior.
//! Pure: the same candidates, standings and seed give the same choice.

use crate::health::Standing;
use crate::rng::Rng;
use iicp_proto::control::CxPublicKey;

/// A node as the directory described it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The full node id (dispatch view) or its 8-hex prefix (public view).
    pub key: String,
    pub endpoint: Option<String>,
    pub score: f64,
    pub region: Option<String>,
    pub models: Vec<String>,
    pub modalities: Vec<String>,
    pub reputation: f64,
    pub cx_public_key: Option<CxPublicKey>,
    /// The node has a CX key (also true when the public view hides the key itself).
    pub key_ready: bool,
    pub latency_estimate_ms: Option<f64>,
}

/// Hard requirements of a call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requirements {
    pub model: Option<String>,
    pub modality: Option<String>,
    /// Strict region policy: only these regions.
    pub regions: Option<Vec<String>>,
    pub min_reputation: Option<f64>,
    /// Only nodes that can receive an encrypted payload.
    pub require_encryption: bool,
}

impl Requirements {
    pub fn admits(&self, c: &Candidate) -> bool {
        self.model.as_ref().is_none_or(|m| c.models.contains(m))
            && self
                .modality
                .as_ref()
                .is_none_or(|m| m == "text" || c.modalities.contains(m))
            && self
                .regions
                .as_ref()
                .is_none_or(|rs| c.region.as_ref().is_some_and(|r| rs.contains(r)))
            && self.min_reputation.is_none_or(|m| c.reputation >= m)
            && (!self.require_encryption || c.key_ready)
    }
}

/// Picks among `candidates` (with their `standings`, same order), skipping indices in
/// `exclude`. None when nothing eligible is left.
pub fn choose(
    candidates: &[Candidate],
    standings: &[Standing],
    req: &Requirements,
    exclude: &[usize],
    rng: &mut Rng,
) -> Option<usize> {
    let eligible: Vec<usize> = (0..candidates.len())
        .filter(|i| !exclude.contains(i))
        .filter(|i| standings[*i].callable && req.admits(&candidates[*i]))
        .collect();
    match eligible.len() {
        0 => None,
        1 => Some(eligible[0]),
        n => {
            let a = eligible[rng.below(n)];
            let mut b = eligible[rng.below(n - 1)];
            if b == a {
                b = eligible[n - 1];
            }
            let cost = |i: usize| standings[i].load_cost / candidates[i].score.max(0.1);
            Some(if cost(b) < cost(a) { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(key: &str, score: f64) -> Candidate {
        Candidate {
            key: key.into(),
            endpoint: Some(format!("http://{key}")),
            score,
            region: Some("eu".into()),
            models: vec!["m".into()],
            modalities: vec!["text".into()],
            reputation: 0.5,
            cx_public_key: None,
            key_ready: false,
            latency_estimate_ms: None,
        }
    }

    fn ok(cost: f64) -> Standing {
        Standing {
            callable: true,
            load_cost: cost,
        }
    }

    #[test]
    fn hard_requirements_are_never_undone() {
        let mut c = vec![cand("a", 0.9), cand("b", 0.5)];
        c[1].models = vec!["big".into()];
        let req = Requirements {
            model: Some("big".into()),
            ..Default::default()
        };
        for seed in 0..20 {
            let got = choose(
                &c,
                &[ok(1.0), ok(1000.0)],
                &req,
                &[],
                &mut Rng::seeded(seed),
            );
            assert_eq!(got, Some(1));
        }
        let strict = Requirements {
            regions: Some(vec!["us".into()]),
            ..Default::default()
        };
        assert_eq!(
            choose(&c, &[ok(1.0), ok(1.0)], &strict, &[], &mut Rng::seeded(1)),
            None
        );
        let enc = Requirements {
            require_encryption: true,
            ..Default::default()
        };
        assert_eq!(
            choose(&c, &[ok(1.0), ok(1.0)], &enc, &[], &mut Rng::seeded(1)),
            None
        );
    }

    #[test]
    fn open_breakers_and_tried_nodes_are_skipped() {
        let c = vec![cand("a", 0.9), cand("b", 0.9), cand("c", 0.9)];
        let s = [
            Standing {
                callable: false,
                load_cost: 1.0,
            },
            ok(1.0),
            ok(1.0),
        ];
        for seed in 0..20 {
            let got = choose(
                &c,
                &s,
                &Requirements::default(),
                &[1],
                &mut Rng::seeded(seed),
            );
            assert_eq!(got, Some(2));
        }
    }

    #[test]
    fn two_choices_prefer_the_cheaper_node_and_the_seed_fixes_the_choice() {
        let c = vec![cand("a", 0.9), cand("b", 0.9)];
        let s = [ok(500.0), ok(5.0)];
        for seed in 0..20 {
            assert_eq!(
                choose(
                    &c,
                    &s,
                    &Requirements::default(),
                    &[],
                    &mut Rng::seeded(seed)
                ),
                Some(1)
            );
        }
        // With equal load cost, the directory's score decides.
        let c = vec![cand("a", 0.2), cand("b", 0.9)];
        let s = [ok(10.0), ok(10.0)];
        assert_eq!(
            choose(&c, &s, &Requirements::default(), &[], &mut Rng::seeded(3)),
            Some(1)
        );
        // Determinism: same inputs and seed, same answer.
        let many: Vec<Candidate> = (0..10).map(|i| cand(&i.to_string(), 0.5)).collect();
        let st = vec![ok(10.0); 10];
        let a = choose(
            &many,
            &st,
            &Requirements::default(),
            &[],
            &mut Rng::seeded(99),
        );
        let b = choose(
            &many,
            &st,
            &Requirements::default(),
            &[],
            &mut Rng::seeded(99),
        );
        assert_eq!(a, b);
    }
}
