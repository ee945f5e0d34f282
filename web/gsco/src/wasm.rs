//! JavaScript API of the GSCo panel (driven by `web/www/gsco-worker.js`).

use std::cell::RefCell;

use burn_tensor::wgpu::wgpu;
use meddr_specialist::{ConfigOverrides, Task};
use wasm_bindgen::prelude::*;

use crate::panel::{Panel, PanelError};

fn js_err(e: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

fn to_js(v: &serde_json::Value) -> Result<JsValue, JsValue> {
    js_sys::JSON::parse(&v.to_string())
}

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
export interface SpecialistSummary { name: string; architecture: string; labels: string[]; task: string; imgSize: number; sha256: string; }
export interface IndexSummary {
  name: string; cases: number; specialist: string; architecture: string; featureMode: "unpooled" | "pooled";
  featureDim: number; dtype: "f32" | "f16"; labels: string[]; source: string;
}
/** Same fields as `meddr gsco run --json` (before MedDr's answer). */
export interface Collaboration {
  moed: { specialist: string; architecture: string; predicted: string[]; probabilities: number[]; logits: number[] }[];
  rad: { index: number; label: string; distance: number }[];
  moed_string: string; rad_string: string; prompt: string;
}
"#;

/// The panel as JavaScript sees it: its own WebGPU device (burn's), specialists and one index.
#[wasm_bindgen]
pub struct GscoPanel {
    panel: RefCell<Panel>,
    adapter: String,
}

#[wasm_bindgen]
impl GscoPanel {
    /// Creates a WebGPU device with the adapter's full features and limits and registers it with burn.
    pub async fn create() -> Result<GscoPanel, JsValue> {
        console_panic_hook();
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions::default())
            .await
            .map_err(|e| js_err(format!("no WebGPU adapter for the specialists: {e}")))?;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("meddr-gsco"),
                required_features: adapter.features(),
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|e| {
                js_err(format!(
                    "could not create the WebGPU device for the specialists: {e}"
                ))
            })?;
        let burn =
            meddr_specialist::wgpu_device(&instance, &adapter, &device, &queue).map_err(js_err)?;
        let info = adapter.get_info();
        Ok(GscoPanel {
            panel: RefCell::new(Panel::new(burn)),
            adapter: format!("{} ({:?})", info.name, info.backend),
        })
    }

    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> String {
        self.adapter.clone()
    }

    /// Loads a specialist folder's two files. `imgSize`/`task` fill in a plain timm config (they must not
    /// contradict the file's own).
    #[wasm_bindgen(js_name = addSpecialist, unchecked_return_type = "SpecialistSummary")]
    pub fn add_specialist(
        &self,
        name: String,
        config: Vec<u8>,
        weights: Vec<u8>,
        img_size: Option<u32>,
        task: Option<String>,
    ) -> Result<JsValue, JsValue> {
        let task = match task.as_deref() {
            None | Some("") => None,
            Some(t) => Some(Task::parse(t).ok_or_else(|| {
                js_err(format!("task {t:?}: expected multi-class or multi-label"))
            })?),
        };
        let overrides = ConfigOverrides {
            img_size,
            task,
            label_names: None,
        };
        let v = self
            .panel_mut()?
            .add_specialist(&name, &config, &weights, &overrides)
            .map_err(js_err)?;
        to_js(&v)
    }

    #[wasm_bindgen(js_name = removeSpecialist)]
    pub fn remove_specialist(&self, name: String) -> Result<usize, JsValue> {
        Ok(self.panel_mut()?.remove_specialist(&name))
    }

    /// Reads and checks a reference index (`meddr gsco index` output).
    #[wasm_bindgen(js_name = setIndex, unchecked_return_type = "IndexSummary")]
    pub fn set_index(&self, name: String, bytes: Vec<u8>) -> Result<JsValue, JsValue> {
        let v = self.panel_mut()?.set_index(&name, bytes).map_err(js_err)?;
        to_js(&v)
    }

    pub fn status(&self) -> Result<JsValue, JsValue> {
        to_js(&self.panel.borrow().status())
    }

    /// MoED, RAD and the composed prompt for one JPEG/PNG image. `templateText` absent: the built-in
    /// template `templateName` (`pcam200`).
    #[wasm_bindgen(unchecked_return_type = "Collaboration")]
    pub async fn collaborate(
        &self,
        image: Vec<u8>,
        template_name: String,
        template_text: Option<String>,
        top_n: u32,
    ) -> Result<JsValue, JsValue> {
        // Held across the readbacks: changes in the meantime are refused by `panel_mut`.
        let panel = self
            .panel
            .try_borrow()
            .map_err(|_| js_err(PanelError::Invalid("the panel is busy".into())))?;
        let v = panel
            .collaborate(
                &image,
                &template_name,
                template_text.as_deref(),
                top_n as usize,
            )
            .await
            .map_err(js_err)?;
        to_js(&v)
    }
}

impl GscoPanel {
    /// The panel for a change; refused while a `collaborate` is reading it (across its GPU readbacks).
    fn panel_mut(&self) -> Result<std::cell::RefMut<'_, Panel>, JsValue> {
        self.panel.try_borrow_mut().map_err(|_| {
            js_err(PanelError::Invalid(
                "the panel is busy with an image; wait for it".into(),
            ))
        })
    }
}

fn console_panic_hook() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            web_sys::console::error_1(&JsValue::from_str(&format!("meddr-gsco panic: {info}")));
        }));
    });
}
