//! Model yamls in Ultralytics' format: `nc`, `scales`, `backbone` and `head` rows of
//! `[from, repeats, module, args]`. The YOLO26 yaml is embedded; a user's file works too.

use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

/// One yaml row: from, repeats, module and its arguments.
#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    Conv {
        c2: usize,
        k: usize,
        s: usize,
    },
    C3k2 {
        c2: usize,
        c3k: bool,
        e: f64,
        attn: bool,
    },
    Sppf {
        c2: usize,
        k: usize,
        n: usize,
        shortcut: bool,
    },
    C2psa {
        c2: usize,
    },
    Upsample,
    Concat,
    Detect,
}

static YOLO26_YAML: &str = include_str!("../../embedded/yolo26.yaml");

/// A parsed model definition.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDef {
    pub nc: usize,
    /// scale letter → (depth, width, max_channels), in the file's order
    pub scales: Vec<(char, (f64, f64, usize))>,
    pub layout: Vec<(Vec<i64>, usize, Spec)>,
}

const SUPPORTED: &str = "Conv, C3k2, SPPF, C2PSA, nn.Upsample, Concat, Detect";

fn num(y: &Yaml) -> Option<f64> {
    match y {
        Yaml::Integer(i) => Some(*i as f64),
        Yaml::Real(_) => y.as_f64(),
        _ => None,
    }
}

fn flag(y: Option<&Yaml>, default: bool) -> Result<bool, String> {
    match y {
        None => Ok(default),
        Some(Yaml::Boolean(b)) => Ok(*b),
        Some(other) => Err(format!("expected True or False, found {other:?}")),
    }
}

impl ModelDef {
    /// (depth, width, max_channels) of a scale.
    pub fn scale(&self, letter: char) -> Option<(f64, f64, usize)> {
        self.scales
            .iter()
            .find(|(c, _)| *c == letter)
            .map(|(_, v)| *v)
    }

    /// The embedded YOLO26 definition.
    pub fn yolo26() -> Self {
        Self::parse(YOLO26_YAML, "embedded yolo26.yaml").expect("the embedded yaml is valid")
    }

    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses yaml `text`; errors name `origin`, the section and row.
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let docs = YamlLoader::load_from_str(text)
            .map_err(|e| format!("{origin}: not valid YAML: {e}"))?;
        let doc = docs
            .first()
            .ok_or_else(|| format!("{origin}: empty file"))?;
        let nc = match &doc["nc"] {
            Yaml::Integer(n) if *n >= 1 => *n as usize,
            Yaml::BadValue => 80,
            other => {
                return Err(format!(
                    "{origin}: nc: expected a class count ≥ 1, found {other:?}"
                ))
            }
        };
        let mut scales = Vec::new();
        if let Some(h) = doc["scales"].as_hash() {
            for (k, v) in h {
                let letter = k
                    .as_str()
                    .and_then(|s| s.chars().next())
                    .ok_or_else(|| format!("{origin}: scales: bad key {k:?}"))?;
                let vals: Vec<f64> = v
                    .as_vec()
                    .map(|a| a.iter().filter_map(num).collect())
                    .unwrap_or_default();
                if vals.len() != 3 {
                    return Err(format!(
                        "{origin}: scales.{letter}: expected [depth, width, max_channels]"
                    ));
                }
                scales.push((letter, (vals[0], vals[1], vals[2] as usize)));
            }
        }
        let mut layout = Vec::new();
        for section in ["backbone", "head"] {
            let rows = doc[section]
                .as_vec()
                .ok_or_else(|| format!("{origin}: missing the '{section}' list"))?;
            for (r, row) in rows.iter().enumerate() {
                let at = format!("{origin}: {section}[{r}] (layer {})", layout.len());
                let cells = row
                    .as_vec()
                    .filter(|c| c.len() == 4)
                    .ok_or_else(|| format!("{at}: expected [from, repeats, module, args]"))?;
                let from: Vec<i64> = match &cells[0] {
                    Yaml::Integer(i) => vec![*i],
                    Yaml::Array(a) => a
                        .iter()
                        .map(|x| {
                            x.as_i64()
                                .ok_or_else(|| format!("{at}: 'from' must hold integers"))
                        })
                        .collect::<Result<_, _>>()?,
                    other => {
                        return Err(format!(
                            "{at}: 'from' must be an integer or a list, found {other:?}"
                        ))
                    }
                };
                let repeats = cells[1]
                    .as_i64()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("{at}: repeats must be ≥ 1"))?
                    as usize;
                let module = cells[2]
                    .as_str()
                    .ok_or_else(|| format!("{at}: module must be a name"))?;
                let args = cells[3].as_vec().cloned().unwrap_or_default();
                let int = |i: usize, what: &str| -> Result<usize, String> {
                    args.get(i)
                        .and_then(num)
                        .filter(|v| *v >= 1.0)
                        .map(|v| v as usize)
                        .ok_or_else(|| {
                            format!(
                                "{at}: {module} argument {i} ({what}) must be a positive number"
                            )
                        })
                };
                let spec = match module {
                    "Conv" => Spec::Conv {
                        c2: int(0, "channels")?,
                        k: int(1, "kernel")?,
                        s: int(2, "stride")?,
                    },
                    "C3k2" => Spec::C3k2 {
                        c2: int(0, "channels")?,
                        c3k: flag(args.get(1), false).map_err(|e| format!("{at}: c3k: {e}"))?,
                        e: args.get(2).and_then(num).unwrap_or(0.5),
                        attn: flag(args.get(3), false).map_err(|e| format!("{at}: attn: {e}"))?,
                    },
                    "SPPF" => Spec::Sppf {
                        c2: int(0, "channels")?,
                        k: args.get(1).and_then(num).map_or(5, |v| v as usize),
                        n: args.get(2).and_then(num).map_or(3, |v| v as usize),
                        shortcut: flag(args.get(3), false)
                            .map_err(|e| format!("{at}: shortcut: {e}"))?,
                    },
                    "C2PSA" => Spec::C2psa {
                        c2: int(0, "channels")?,
                    },
                    "nn.Upsample" => Spec::Upsample,
                    "Concat" => Spec::Concat,
                    "Detect" => Spec::Detect,
                    other => {
                        return Err(format!(
                            "{at}: module '{other}' is not supported; supported: {SUPPORTED}"
                        ))
                    }
                };
                layout.push((from, repeats, spec));
            }
        }
        if !matches!(layout.last(), Some((_, _, Spec::Detect))) {
            return Err(format!("{origin}: the last layer must be Detect"));
        }
        Ok(ModelDef { nc, scales, layout })
    }
}

/// The scale letter in a model name: `yolo26n.yaml` → n (Ultralytics' convention).
pub fn scale_from_name(name: &str) -> Option<char> {
    let stem = Path::new(name).file_stem()?.to_str()?;
    let rest = &stem[stem.rfind("yolo")? + 4..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    rest[digits.len()..]
        .chars()
        .next()
        .filter(|c| "nslmx".contains(*c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_yaml_has_24_layers_and_five_scales() {
        let d = ModelDef::yolo26();
        assert_eq!(d.layout.len(), 24);
        assert_eq!(d.scales.len(), 5);
        assert_eq!(d.scale('m'), Some((0.5, 1.0, 512)));
        assert_eq!(d.scales[0].0, 'n', "file order");
        assert_eq!(
            d.layout[22].2,
            Spec::C3k2 {
                c2: 1024,
                c3k: true,
                e: 0.5,
                attn: true
            }
        );
        assert_eq!(d.layout[23].0, vec![16, 19, 22]);
    }

    #[test]
    fn bad_yaml_names_the_file_and_row() {
        let e = ModelDef::parse(
            "nc: 3\nbackbone:\n  - [-1, 1, Foo, [1]]\nhead: []\n",
            "my.yaml",
        )
        .unwrap_err();
        assert!(
            e.contains("my.yaml")
                && e.contains("backbone[0]")
                && e.contains("Foo")
                && e.contains("C3k2"),
            "{e}"
        );
        let e = ModelDef::parse("nc: [\n", "bad.yaml").unwrap_err();
        assert!(e.contains("bad.yaml") && e.contains("YAML"), "{e}");
        let e = ModelDef::parse("nc: 0\nbackbone: []\nhead: []\n", "z.yaml").unwrap_err();
        assert!(e.contains("nc"), "{e}");
    }

    #[test]
    fn scale_letters_from_names() {
        assert_eq!(scale_from_name("yolo26n.yaml"), Some('n'));
        assert_eq!(scale_from_name("cfg/yolo26x.yaml"), Some('x'));
        assert_eq!(scale_from_name("yolo26.yaml"), None);
        assert_eq!(scale_from_name("custom.yaml"), None);
        assert_eq!(scale_from_name("/tmp/my-yolo26s.yaml"), Some('s'));
    }
}
