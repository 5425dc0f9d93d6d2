//! YOLO26 object detection (in progress): the model with Ultralytics' structure and names.

pub mod blocks;
pub mod config;
pub mod head;
pub mod info;
pub mod model;
pub mod postprocess;
pub mod pt;
pub mod weights;
