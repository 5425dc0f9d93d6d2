//! YOLO26 object detection (in progress): the model with Ultralytics' structure and names.

pub mod blocks;
pub mod head;
pub mod model;
pub mod weights;
