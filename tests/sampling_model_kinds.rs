//! Every model-sampling kind against `tests/data/sampling_sigmas_golden.json`, made by
//! ComfyUI's own modules (`scripts/goldens/gen_sampling_goldens.py`): the sigma table,
//! σ ↔ t, `percent_to_sigma`, every scheduler at 4/10/20 steps, KSampler's sigma selection
//! (denoise < 1, discard-penultimate samplers) and SDTurboScheduler. Sigmas must agree
//! within 1e-6 relative; most are bit-exact.

use comfyrs::sampling::model_sampling::{
    flux_shift_for_resolution, BetaSchedule, ModelSampling, Prediction,
};
use comfyrs::sampling::schedulers::{calculate_sigmas, ksampler_sigmas, sd_turbo, Scheduler};
use serde_json::Value;

fn golden() -> Value {
    let s = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/sampling_sigmas_golden.json"
    ))
    .unwrap();
    serde_json::from_str(&s).unwrap()
}

fn node_flux(w: i64, h: i64) -> ModelSampling {
    ModelSampling::flux(flux_shift_for_resolution(1.15, 0.5, w, h))
}

/// comfyrs's model sampling for each golden kind (built as the golden script builds it).
fn kind(name: &str) -> ModelSampling {
    use Prediction::*;
    let d = BetaSchedule::default();
    let discrete = |p, zsnr| ModelSampling::discrete(p, d.linear_start, d.linear_end, 1000, zsnr);
    match name {
        "discrete_eps" => ModelSampling::sd15(Eps),
        "discrete_v" => ModelSampling::sd15(VPrediction),
        "sdxl_eps" => ModelSampling::sdxl(Eps),
        "discrete_v_zsnr" => discrete(VPrediction, true),
        "discrete_eps_zsnr" => discrete(Eps, true),
        "discrete_lcm" => ModelSampling::discrete_lcm(d, false),
        "discrete_x0" => ModelSampling::sd15(X0),
        "discrete_img_to_img" => ModelSampling::sd15(ImgToImg),
        "flow_shift1_mult1" => ModelSampling::flux_schnell(),
        "flow_shift3_mult1000" => ModelSampling::sd3(),
        "sd3_node_shift3" => ModelSampling::discrete_flow(3.0, 1000.0),
        "auraflow_node_shift1.73" => ModelSampling::discrete_flow(1.73, 1.0),
        "flux_1.15" => ModelSampling::flux_dev(),
        "flux_node_256x256" => node_flux(256, 256),
        "flux_node_128x128" => node_flux(128, 128),
        "flux_node_768x1344" => node_flux(768, 1344),
        "flux_node_1024x1024" => node_flux(1024, 1024),
        "continuous_edm_v" => ModelSampling::continuous_edm(VPrediction, 0.002, 120.0, 1.0),
        "continuous_edm_edm" => ModelSampling::continuous_edm(Edm, 0.002, 120.0, 0.5),
        "continuous_edm_eps" => ModelSampling::continuous_edm(Eps, 0.002, 80.0, 1.0),
        "continuous_edm_cosmos" => ModelSampling::cosmos_rflow(0.002, 80.0, 1.0),
        "continuous_v" => ModelSampling::continuous_v(VPrediction, 0.03, 500.0, 1.0),
        other => panic!("no comfyrs model sampling for golden kind {other}"),
    }
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| match x {
            Value::String(s) => s.parse::<f64>().unwrap(), // "inf" / "-inf" / "nan"
            _ => x.as_f64().unwrap(),
        })
        .collect()
}

/// Counts of compared / bit-exact values and the failures over `tol` relative.
#[derive(Default)]
struct Tally {
    compared: usize,
    exact: usize,
    failures: Vec<String>,
}

impl Tally {
    fn close(&mut self, what: &str, got: f64, want: f64, tol: f64) {
        self.compared += 1;
        if got == want {
            self.exact += 1;
            return;
        }
        let rel = if want == 0.0 {
            got.abs()
        } else {
            ((got - want) / want).abs()
        };
        if rel > tol || rel.is_nan() {
            self.failures
                .push(format!("{what}: got {got} want {want} (rel {rel:.2e})"));
        }
    }

    fn list(&mut self, what: &str, got: &[f32], want: &Value) {
        let want = f64s(want);
        if got.len() != want.len() {
            self.failures.push(format!(
                "{what}: {} sigmas, ComfyUI has {} ({got:?} vs {want:?})",
                got.len(),
                want.len()
            ));
            return;
        }
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            self.close(&format!("{what}[{i}]"), *g as f64, *w, 1e-6);
        }
    }
}

fn kinds(g: &Value) -> Vec<(String, &Value, ModelSampling)> {
    g["kinds"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(n, v)| (n.clone(), v, kind(n)))
        .collect()
}

fn finish(t: Tally, what: &str) {
    eprintln!(
        "{what}: {} values, {} bit-exact, {} over tolerance",
        t.compared,
        t.exact,
        t.failures.len()
    );
    assert!(
        t.failures.is_empty(),
        "{what}: {} failures:\n{}",
        t.failures.len(),
        t.failures[..t.failures.len().min(40)].join("\n")
    );
    assert!(t.compared > 0);
}

#[test]
fn every_kind_is_covered() {
    let g = golden();
    assert_eq!(g["kinds"].as_object().unwrap().len(), 22);
}

#[test]
fn tables_and_sigma_maps() {
    let g = golden();
    let mut t = Tally::default();
    for (name, v, ms) in kinds(&g) {
        t.close(
            &format!("{name} sigma_min"),
            ms.sigma_min() as f64,
            v["sigma_min"].as_f64().unwrap(),
            1e-6,
        );
        t.close(
            &format!("{name} sigma_max"),
            ms.sigma_max() as f64,
            v["sigma_max"].as_f64().unwrap(),
            1e-6,
        );
        let tab = &v["table"];
        assert_eq!(
            ms.sigmas.len() as u64,
            tab["len"].as_u64().unwrap(),
            "{name} table length"
        );
        for (i, w) in tab["index"]
            .as_array()
            .unwrap()
            .iter()
            .zip(f64s(&tab["value"]))
        {
            let i = i.as_u64().unwrap() as usize;
            t.close(&format!("{name} sigmas[{i}]"), ms.sigmas[i] as f64, w, 1e-6);
        }
        let m = &v["maps"];
        for (s, w) in f64s(&m["timestep_of"]).iter().zip(f64s(&m["timestep"])) {
            t.close(
                &format!("{name} timestep({s})"),
                ms.timestep(*s as f32) as f64,
                w,
                1e-6,
            );
        }
        for (ts, w) in f64s(&m["sigma_of"]).iter().zip(f64s(&m["sigma"])) {
            t.close(
                &format!("{name} sigma({ts})"),
                ms.sigma(*ts as f32) as f64,
                w,
                1e-6,
            );
        }
    }
    finish(t, "tables and σ ↔ t");
}

#[test]
fn percent_to_sigma() {
    let g = golden();
    let mut t = Tally::default();
    for (name, v, ms) in kinds(&g) {
        let m = &v["maps"];
        for (p, w) in f64s(&m["percent"]).iter().zip(f64s(&m["percent_to_sigma"])) {
            t.close(
                &format!("{name} percent_to_sigma({p})"),
                ms.percent_to_sigma(*p),
                w,
                1e-6,
            );
        }
    }
    finish(t, "percent_to_sigma");
}

#[test]
fn flux_node_shift_is_the_f64_expression() {
    let g = golden();
    for (key, want) in g["flux_node_shift"].as_object().unwrap() {
        let parts: Vec<&str> = key.split('/').collect();
        let (w, h) = parts[0].split_once('x').unwrap();
        let got = flux_shift_for_resolution(
            parts[1].parse().unwrap(),
            parts[2].parse().unwrap(),
            w.parse().unwrap(),
            h.parse().unwrap(),
        );
        assert_eq!(got, want.as_f64().unwrap(), "{key}");
    }
}

#[test]
fn every_scheduler_at_4_10_20_steps() {
    let g = golden();
    let mut t = Tally::default();
    for (name, v, ms) in kinds(&g) {
        let scheds = v["schedulers"].as_object().unwrap();
        assert_eq!(scheds.len(), 27, "{name}");
        for (key, want) in scheds {
            let (sched, steps) = key.split_once('/').unwrap();
            let s: Scheduler = sched.parse().unwrap();
            let got = calculate_sigmas(&ms, s, steps.parse().unwrap());
            t.list(&format!("{name} {key}"), &got, want);
        }
    }
    finish(t, "schedulers");
}

#[test]
fn denoise_and_ksampler_selection() {
    let g = golden();
    let mut t = Tally::default();
    for (name, v, ms) in kinds(&g) {
        // BasicScheduler with denoise < 1 (the same rule as KSampler's for euler).
        for (key, want) in v["basic_scheduler"].as_object().unwrap() {
            let p: Vec<&str> = key.split('/').collect();
            let got = ksampler_sigmas(
                &ms,
                p[0].parse().unwrap(),
                "euler",
                p[1].parse().unwrap(),
                Some(p[2].parse().unwrap()),
            );
            t.list(&format!("{name} BasicScheduler {key}"), &got, want);
        }
        for (key, want) in v["ksampler"].as_object().unwrap() {
            let p: Vec<&str> = key.split('/').collect();
            let got = ksampler_sigmas(
                &ms,
                p[1].parse().unwrap(),
                p[0],
                p[2].parse().unwrap(),
                Some(p[3].parse().unwrap()),
            );
            t.list(&format!("{name} KSampler {key}"), &got, want);
        }
    }
    finish(t, "denoise / KSampler");
}

#[test]
fn sd_turbo_scheduler() {
    let g = golden();
    let mut t = Tally::default();
    for (name, v, ms) in kinds(&g) {
        for (key, want) in v["sd_turbo"].as_object().unwrap() {
            let (steps, denoise) = key.split_once('/').unwrap();
            let got = sd_turbo(&ms, steps.parse().unwrap(), denoise.parse().unwrap());
            if want.get("error").is_some() {
                assert!(
                    got.is_err(),
                    "{name} {key}: ComfyUI fails, comfyrs gave {got:?}"
                );
                continue;
            }
            t.list(&format!("{name} SDTurbo {key}"), &got.unwrap(), want);
        }
    }
    finish(t, "SDTurboScheduler");
}
