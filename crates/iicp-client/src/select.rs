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

    fn choose_all(c: &[Candidate], s: &[Standing], req: &Requirements, seed: u64) -> Option<usize> {
        choose(c, s, req, &[], &mut Rng::seeded(seed))
    }

    #[test]
    fn the_same_snapshot_and_seed_give_the_same_pick_and_the_seed_matters() {
        let many: Vec<Candidate> = (0..10).map(|i| cand(&format!("n{i}"), 0.5)).collect();
        let st: Vec<Standing> = (0..10).map(|i| ok(10.0 + i as f64)).collect();
        let req = Requirements::default();
        let picks: Vec<_> = (0..50)
            .map(|seed| choose_all(&many, &st, &req, seed))
            .collect();
        let again: Vec<_> = (0..50)
            .map(|seed| choose_all(&many, &st, &req, seed))
            .collect();
        assert_eq!(picks, again);
        let mut distinct = picks.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() >= 3,
            "different seeds spread the load: {distinct:?}"
        );
    }

    #[test]
    fn over_many_seeds_the_cheaper_node_wins_most_duels() {
        // Load cost doubles from node to node; the directory scores them alike.
        let c: Vec<Candidate> = (0..5).map(|i| cand(&format!("n{i}"), 0.5)).collect();
        let s: Vec<Standing> = (0..5).map(|i| ok(10.0 * f64::from(1 << i))).collect();
        let mut wins = [0u32; 5];
        for seed in 0..4000 {
            wins[choose_all(&c, &s, &Requirements::default(), seed).unwrap()] += 1;
        }
        assert!(
            wins.windows(2).all(|w| w[0] > w[1]),
            "cheaper nodes win more often: {wins:?}"
        );
        assert_eq!(
            wins[4], 0,
            "the dearest node loses every duel it is drawn into"
        );
        // The cheapest is drawn into 2 of 5 duels and wins them all: about 40 %.
        assert!((1400..=1800).contains(&wins[0]), "{wins:?}");
    }

    #[test]
    fn the_directory_score_is_the_prior_and_the_client_s_load_can_overrule_it() {
        let c = vec![cand("a", 0.9), cand("b", 0.3)];
        for seed in 0..50 {
            assert_eq!(
                choose_all(&c, &[ok(10.0), ok(10.0)], &Requirements::default(), seed),
                Some(0)
            );
            // b costs a fifth of a: 20/0.3 < 100/0.9.
            assert_eq!(
                choose_all(&c, &[ok(100.0), ok(20.0)], &Requirements::default(), seed),
                Some(1)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn measured_latency_and_calls_in_flight_steer_the_choice() {
        use crate::health::Health;
        use std::time::Duration;
        let c = vec![cand("fast", 0.5), cand("slow", 0.5)];
        let health = Health::default();
        health
            .begin("fast")
            .unwrap()
            .success(Duration::from_millis(20));
        health
            .begin("slow")
            .unwrap()
            .success(Duration::from_millis(300));
        let standings = |h: &Health| [h.standing("fast", None), h.standing("slow", None)];
        for seed in 0..50 {
            assert_eq!(
                choose_all(&c, &standings(&health), &Requirements::default(), seed),
                Some(0)
            );
        }
        // Twenty calls in flight on the fast node make it the dearer one (20 × 21 > 300).
        let busy: Vec<_> = (0..20).map(|_| health.begin("fast").unwrap()).collect();
        for seed in 0..50 {
            assert_eq!(
                choose_all(&c, &standings(&health), &Requirements::default(), seed),
                Some(1)
            );
        }
        drop(busy);
        assert_eq!(
            choose_all(&c, &standings(&health), &Requirements::default(), 0),
            Some(0)
        );
    }

    #[test]
    fn hard_filters_exclude_model_modality_region_and_reputation_mismatches() {
        let mut good = cand("good", 0.1);
        good.models = vec!["llama".into()];
        good.modalities = vec!["text".into(), "image".into()];
        good.reputation = 0.9;
        good.key_ready = true;
        let mut other_model = good.clone();
        other_model.key = "other-model".into();
        other_model.models = vec!["mistral".into()];
        let mut text_only = good.clone();
        text_only.key = "text-only".into();
        text_only.modalities = vec!["text".into()];
        let mut us = good.clone();
        us.key = "us".into();
        us.region = Some("us".into());
        let mut no_region = good.clone();
        no_region.key = "no-region".into();
        no_region.region = None;
        let mut low_rep = good.clone();
        low_rep.key = "low-rep".into();
        low_rep.reputation = 0.3;
        let mut no_key = good.clone();
        no_key.key = "no-key".into();
        no_key.key_ready = false;
        // Every other node is far cheaper and better scored than `good`, yet never chosen.
        let c = vec![
            good.clone(),
            other_model,
            text_only,
            us,
            no_region,
            low_rep,
            no_key,
        ];
        let mut s = vec![ok(1.0); c.len()];
        s[0] = ok(10_000.0);
        let req = Requirements {
            model: Some("llama".into()),
            modality: Some("image".into()),
            regions: Some(vec!["eu".into()]),
            min_reputation: Some(0.8),
            require_encryption: true,
        };
        for (i, x) in c.iter().enumerate() {
            assert_eq!(req.admits(x), i == 0, "{}", x.key);
        }
        for seed in 0..200 {
            assert_eq!(choose_all(&c, &s, &req, seed), Some(0));
        }
        // Each requirement alone removes exactly its mismatch.
        let one = |req: Requirements| -> Vec<&str> {
            c.iter()
                .filter(|x| !req.admits(x))
                .map(|x| x.key.as_str())
                .collect()
        };
        assert_eq!(
            one(Requirements {
                model: Some("llama".into()),
                ..Default::default()
            }),
            ["other-model"]
        );
        assert_eq!(
            one(Requirements {
                modality: Some("image".into()),
                ..Default::default()
            }),
            ["text-only"]
        );
        assert_eq!(
            one(Requirements {
                modality: Some("text".into()),
                ..Default::default()
            }),
            Vec::<&str>::new()
        );
        assert_eq!(
            one(Requirements {
                regions: Some(vec!["eu".into()]),
                ..Default::default()
            }),
            ["us", "no-region"]
        );
        assert_eq!(
            one(Requirements {
                min_reputation: Some(0.8),
                ..Default::default()
            }),
            ["low-rep"]
        );
        assert_eq!(
            one(Requirements {
                require_encryption: true,
                ..Default::default()
            }),
            ["no-key"]
        );
    }

    #[test]
    fn a_single_candidate_is_always_chosen_unless_its_breaker_is_open() {
        let c = vec![cand("only", 0.1)];
        for seed in 0..200 {
            assert_eq!(
                choose_all(&c, &[ok(1e6)], &Requirements::default(), seed),
                Some(0)
            );
        }
        let open = Standing {
            callable: false,
            load_cost: 1.0,
        };
        for seed in 0..200 {
            assert_eq!(
                choose_all(&c, &[open], &Requirements::default(), seed),
                None
            );
        }
        assert_eq!(choose_all(&[], &[], &Requirements::default(), 1), None);
    }
}
