//! `meddr info`: what is in a MedDr GGUF and what running it costs in memory.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use meddr_engine::{LoadOptions, MemoryPlan, PlanDevice};
use meddr_gguf::{GgufFile, GgufHeader};
use meddr_reference::ModelConfig;
use meddr_runtime::ModelInfo;

/// The three parts of the file, by tensor-name prefix (`docs/gguf-layout.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Vit,
    Projector,
    Llm,
}

impl Component {
    pub fn of(name: &str) -> Component {
        if name.starts_with("v.") {
            Component::Vit
        } else if name.starts_with("mm.") {
            Component::Projector
        } else {
            Component::Llm
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Component::Vit => "ViT",
            Component::Projector => "projector",
            Component::Llm => "LLM",
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct ComponentStats {
    pub tensors: usize,
    pub params: u64,
    pub bytes: u64,
    /// Type name → (tensor count, bytes).
    pub types: BTreeMap<&'static str, (usize, u64)>,
}

pub fn component_stats(h: &GgufHeader) -> BTreeMap<Component, ComponentStats> {
    let mut out: BTreeMap<Component, ComponentStats> = BTreeMap::new();
    for t in &h.tensors {
        let s = out.entry(Component::of(&t.name)).or_default();
        s.tensors += 1;
        s.params = s.params.saturating_add(t.n_elements());
        s.bytes = s.bytes.saturating_add(t.byte_size());
        let e = s.types.entry(t.ty.name()).or_default();
        e.0 += 1;
        e.1 = e.1.saturating_add(t.byte_size());
    }
    out
}

/// GPU memory as the engine allocates it (`MemoryPlan::for_header`, held equal to a real load by the
/// engine's tests), on a GPU with shader-f16 and 2 GiB bindings, at `meddr run`'s defaults (the file's
/// context, 512-token prefill chunks), and the peak of each way `meddr` uses the GPU.
fn memory_plan(s: &mut String, h: &GgufHeader, ctx: usize) {
    let _ = writeln!(
        s,
        "\nGPU memory plan (what `meddr run` allocates: {ctx}-token f16 KV cache, 512-token prefill chunks; without shader-f16 the KV cache is f32, twice as large):"
    );
    let plan = match MemoryPlan::for_header(h, &LoadOptions::default(), PlanDevice::TYPICAL_GPU) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(s, "  not available: {e}");
            return;
        }
    };
    if plan.vit_gpu > 0 {
        let _ = writeln!(
            s,
            "  ViT        weights {}, scratch {}",
            human(plan.vit_gpu),
            human(plan.vision_activations)
        );
        let _ = writeln!(s, "  projector  weights {}", human(plan.projector_gpu));
    }
    let _ = writeln!(
        s,
        "  LLM        weights {}, KV cache {}, activations and buffers {}",
        human(plan.llm_gpu),
        human(plan.kv_cache),
        human(plan.llm_activations)
    );
    let _ = writeln!(s, "  peak:");
    if plan.vit_gpu > 0 {
        let _ = writeln!(
            s,
            "    image question, everything loaded (run --image, chat, serve, the browser)  {}",
            human(plan.peak_resident())
        );
        let _ = writeln!(
            s,
            "    image question, vision tower first and freed (run --image --release-vision)  {} (vision part {}, language part {})",
            human(plan.peak_vision_only().max(plan.peak_language_only())),
            human(plan.peak_vision_only()),
            human(plan.peak_language_only())
        );
    }
    let _ = writeln!(
        s,
        "    text question (run without --image: no vision tower loaded)  {}",
        human(plan.peak_language_only())
    );
}

pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {} ({bytes} B)", UNITS[u])
    }
}

/// The text `meddr info` prints.
pub fn render(file: &GgufFile, info: &ModelInfo, cfg: &ModelConfig) -> String {
    let h = &file.header;
    let file_len = file.total_len();
    let mut s = String::new();
    let l = &cfg.llm;
    let _ = writeln!(s, "name: {}", info.name.as_deref().unwrap_or("(none)"));
    let kind = match info.prompt_format {
        meddr_runtime::PromptFormat::MedDr => format!(
            "llama + MedDr vision (meddr.format_version {})",
            info.format_version
        ),
        meddr_runtime::PromptFormat::Raw | meddr_runtime::PromptFormat::Template => {
            "llama (a plain llama.cpp GGUF: no MedDr metadata)".to_string()
        }
    };
    let _ = writeln!(
        s,
        "architecture: {kind}, file type {}, {} tensors, {}",
        h.get_u32("general.file_type")
            .map(|v| v.to_string())
            .unwrap_or_else(|_| "?".into()),
        h.tensors.len(),
        human(file_len)
    );
    let _ = writeln!(
        s,
        "LLM: hidden {}, layers {}, heads {} (kv {}, head_dim {}), ffn {}, vocab {}, context {}, rope_theta {}, rms eps {:e}",
        l.hidden, l.layers, l.heads, l.kv_heads, l.head_dim, l.ffn, l.vocab, l.context_length, l.rope_theta, l.eps
    );
    let head = if h.tensor("output.weight").is_none() {
        "tied: token_embd.weight (the file has no output.weight)"
    } else {
        "output.weight"
    };
    let _ = writeln!(s, "LM head: {head}");
    let _ = writeln!(s, "file: {}", file.path().display());
    if let Some(p) = file.mmproj_path() {
        let _ = writeln!(s, "mmproj: {} (vision tower and projector)", p.display());
    }
    match (&cfg.vision, &info.vision) {
        (Some(v), Some(vi)) => {
            let _ = writeln!(
                s,
                "ViT: image {}, patch {}, hidden {}, heads {}, mlp {}, layers {}, eps {:e}; projector {} → {} → {}",
                v.image_size, v.patch_size, v.hidden, v.heads, v.mlp, v.layers, v.eps, 4 * v.hidden, v.llm_hidden, v.llm_hidden
            );
            let p = &vi.preprocessing;
            let _ = writeln!(
                s,
                "image: {} tokens (<IMG_CONTEXT> id {}, <img> {}, </img> {}); pad2square {} colour {:?}, mean {:?}, std {:?}",
                vi.num_image_tokens, vi.context_token_id, vi.start_token_id, vi.end_token_id, p.pad2square, p.pad_color, p.mean, p.std
            );
        }
        _ if info.format_version > 0 => {
            let looked: Vec<String> = meddr_gguf::mmproj_candidates(file.path())
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            let _ = writeln!(
                s,
                "ViT: none — a MedDr language model without its mmproj (looked for {}; or pass --mmproj)",
                looked.join(", ")
            );
        }
        _ => {
            let _ = writeln!(s, "ViT: none (text-only file)");
        }
    }
    match info.prompt_format {
        meddr_runtime::PromptFormat::MedDr => {
            let _ = writeln!(
                s,
                "chat: template {}, system {:?}, eos {} (upstream stop), template stop list {:?}",
                info.chat_template, info.system_message, info.eos_token_id, info.stop_token_ids
            );
        }
        meddr_runtime::PromptFormat::Raw => {
            let _ = writeln!(
                s,
                "chat: raw-text completion (no chat template in the file), eos {}, stop list {:?}",
                info.eos_token_id, info.stop_token_ids
            );
        }
        meddr_runtime::PromptFormat::Template => {
            let _ = writeln!(
                s,
                "chat: the file's chat template (tokenizer.chat_template, {} bytes, rendered with minijinja), eos {}, stop list {:?}",
                info.chat_template.len(),
                info.eos_token_id,
                info.stop_token_ids
            );
        }
    }
    let _ = writeln!(s, "\ntensors per component:");
    let stats = component_stats(h);
    for (c, st) in &stats {
        let types: Vec<String> = st
            .types
            .iter()
            .map(|(t, (n, b))| format!("{t} ×{n} ({})", human(*b)))
            .collect();
        let _ = writeln!(
            s,
            "  {:<9} {:>4} tensors, {:>12} params, {}; {}",
            c.label(),
            st.tensors,
            st.params,
            human(st.bytes),
            types.join(", ")
        );
    }
    memory_plan(&mut s, h, l.context_length);
    s
}
