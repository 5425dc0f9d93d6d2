//! YOLO26 object detection: the model with Ultralytics' structure and names, its weights (safetensors and Ultralytics `.pt`), post-processing and the layer table.

pub mod blocks;
pub mod config;
pub mod head;
pub mod info;
pub mod model;
pub mod pickle;
pub mod postprocess;
pub mod pt;
pub mod pt_write;
pub mod weights;
