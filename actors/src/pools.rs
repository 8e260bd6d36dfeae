//! Pools: which queues exist and how each one matches.
//!
//! A pool is identified by its [`PoolSpec`] (time control, variant, rated, region) and carries
//! its own [`MatchingParams`]. The [`PoolCatalog`] is fixed when the engine starts: it comes
//! from a pools file (TOML) or from the built-in default set of common chess time controls.
//! Tenants do not appear here: every tenant gets its own queue for every pool of the catalog.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// Highest rating the engine accepts.
pub const MAX_RATING: u16 = 4000;

/// Longest variant name accepted.
pub const MAX_VARIANT_LEN: usize = 32;

/// Longest region name accepted.
pub const MAX_REGION_LEN: usize = 16;

/// A time control: base minutes plus increment seconds, written `"M+S"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeControl {
    base_minutes: u16,
    increment_s: u16,
}

impl TimeControl {
    /// Longest base time or increment accepted, in minutes or seconds.
    pub const MAX_PART: u16 = 180;

    /// A time control of `base_minutes` + `increment_s`; `None` when out of range or both zero.
    pub fn new(base_minutes: u16, increment_s: u16) -> Option<Self> {
        let in_range = base_minutes <= Self::MAX_PART && increment_s <= Self::MAX_PART;
        (in_range && (base_minutes, increment_s) != (0, 0)).then_some(Self {
            base_minutes,
            increment_s,
        })
    }

    /// Base time in minutes.
    pub fn base_minutes(self) -> u16 {
        self.base_minutes
    }

    /// Increment in seconds.
    pub fn increment_s(self) -> u16 {
        self.increment_s
    }
}

impl fmt::Display for TimeControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", self.base_minutes, self.increment_s)
    }
}

/// Why a pool's fields were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolSpecError {
    /// The time control is not `M+S` with parts in range.
    #[error("time control must be \"M+S\" with minutes and seconds from 0 to 180, not both 0")]
    TimeControl,
    /// The variant name is empty, too long or has characters other than `a-z 0-9 - _`.
    #[error("variant must be 1 to {MAX_VARIANT_LEN} characters of a-z, 0-9, '-' or '_'")]
    Variant,
    /// The region name is empty, too long or has characters other than `a-z 0-9 - _`.
    #[error("region must be 1 to {MAX_REGION_LEN} characters of a-z, 0-9, '-' or '_'")]
    Region,
}

impl FromStr for TimeControl {
    type Err = PoolSpecError;

    fn from_str(text: &str) -> Result<Self, PoolSpecError> {
        let part = |digits: &str| {
            let plain = !digits.is_empty()
                && digits.len() <= 3
                && digits.bytes().all(|b| b.is_ascii_digit());
            plain.then(|| digits.parse::<u16>().ok()).flatten()
        };
        let (base, increment) = text.split_once('+').ok_or(PoolSpecError::TimeControl)?;
        part(base)
            .zip(part(increment))
            .and_then(|(base, increment)| Self::new(base, increment))
            .ok_or(PoolSpecError::TimeControl)
    }
}

impl Serialize for TimeControl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeControl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn is_short_name(text: &str, max_len: usize) -> bool {
    !text.is_empty()
        && text.len() <= max_len
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// What identifies a pool within a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PoolSpec {
    /// Base minutes and increment seconds.
    pub time_control: TimeControl,
    /// Short variant name, such as `standard` or `chess960`.
    pub variant: CompactString,
    /// Whether games from this pool are rated.
    pub rated: bool,
    /// Optional short region name; a pool with a region is distinct from one without.
    pub region: Option<CompactString>,
}

impl PoolSpec {
    /// A validated pool spec.
    pub fn new(
        time_control: TimeControl,
        variant: &str,
        rated: bool,
        region: Option<&str>,
    ) -> Result<Self, PoolSpecError> {
        if !is_short_name(variant, MAX_VARIANT_LEN) {
            return Err(PoolSpecError::Variant);
        }
        if region.is_some_and(|region| !is_short_name(region, MAX_REGION_LEN)) {
            return Err(PoolSpecError::Region);
        }
        Ok(Self {
            time_control,
            variant: variant.into(),
            rated,
            region: region.map(CompactString::from),
        })
    }
}

impl fmt::Display for PoolSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rated = if self.rated { "rated" } else { "casual" };
        write!(f, "{} {} {rated}", self.time_control, self.variant)?;
        match &self.region {
            Some(region) => write!(f, " @{region}"),
            None => Ok(()),
        }
    }
}

/// Which acceptable pairs a wave makes now (SPEC §3, pacing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "pacing", rename_all = "lowercase")]
pub enum Pacing {
    /// Every wave pairs whatever is acceptable.
    #[default]
    Eager,
    /// A wave defers acceptable pairs when a much closer opponent is likely to arrive within
    /// the players' budget (see [`crate::pacing`]).
    Quality {
        /// The wait that 95% of matched players should not exceed, in milliseconds.
        target_wait_ms: u64,
    },
}

impl Pacing {
    /// The target wait of a quality pool when the pools file gives none.
    pub const DEFAULT_TARGET_WAIT_MS: u64 = 3_000;

    /// The name used in pools files and summaries.
    pub fn name(self) -> &'static str {
        match self {
            Self::Eager => "eager",
            Self::Quality { .. } => "quality",
        }
    }
}

/// How one pool pairs its players (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchingParams {
    /// Acceptable rating gap when a player joins.
    pub initial_window: u16,
    /// How much the gap grows at every step.
    pub widen_by: u16,
    /// Length of one widening step, in milliseconds.
    pub widen_every_ms: u64,
    /// Largest acceptable gap.
    pub max_window: u16,
    /// How long an entry may wait before it expires, in milliseconds.
    pub max_wait_ms: u64,
    /// Time between two pairing waves, in milliseconds.
    pub wave_interval_ms: u64,
    /// Which acceptable pairs a wave makes now.
    pub pacing: Pacing,
}

impl Default for MatchingParams {
    fn default() -> Self {
        Self {
            initial_window: 100,
            widen_by: 25,
            widen_every_ms: 10_000,
            max_window: 500,
            max_wait_ms: 600_000,
            wave_interval_ms: 200,
            pacing: Pacing::Eager,
        }
    }
}

impl MatchingParams {
    /// Widening steps completed after waiting `waited_ms`.
    pub fn steps(&self, waited_ms: u64) -> u64 {
        waited_ms / self.widen_every_ms
    }

    /// Acceptable rating gap after waiting `waited_ms`.
    pub fn window(&self, waited_ms: u64) -> u16 {
        let widened =
            u64::from(self.initial_window) + u64::from(self.widen_by) * self.steps(waited_ms);
        widened.min(u64::from(self.max_window)) as u16
    }

    /// Whether an entry that has waited `waited_ms` has expired.
    pub fn is_expired(&self, waited_ms: u64) -> bool {
        waited_ms >= self.max_wait_ms
    }
}

/// Position of a pool in its catalog; stable for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PoolId(pub u16);

/// One pool of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDefinition {
    /// Its position in the catalog.
    pub id: PoolId,
    /// What identifies it.
    pub spec: PoolSpec,
    /// How it matches.
    pub params: MatchingParams,
}

/// The pools the engine serves, fixed at start.
///
/// A plain vector indexed by [`PoolId`] plus a hash map from spec: it is read-only after
/// construction and shared behind an `Arc`, so lookups need no locking.
#[derive(Debug, Clone)]
pub struct PoolCatalog {
    pools: Vec<PoolDefinition>,
    by_spec: HashMap<PoolSpec, PoolId, foldhash::fast::RandomState>,
}

/// Time controls of the built-in catalog.
pub const BUILTIN_TIME_CONTROLS: [&str; 11] = [
    "1+0", "2+1", "3+0", "3+2", "5+0", "5+3", "10+0", "10+5", "15+10", "30+0", "30+20",
];

/// Variants of the built-in catalog.
pub const BUILTIN_VARIANTS: [&str; 2] = ["standard", "chess960"];

impl Default for PoolCatalog {
    fn default() -> Self {
        Self::builtin()
    }
}

impl PoolCatalog {
    /// The built-in set: every [`BUILTIN_TIME_CONTROLS`] in every [`BUILTIN_VARIANTS`], rated
    /// and casual, no region, default matching parameters.
    pub fn builtin() -> Self {
        let mut specs = Vec::new();
        for time_control in BUILTIN_TIME_CONTROLS {
            for variant in BUILTIN_VARIANTS {
                for rated in [true, false] {
                    let time_control = time_control
                        .parse()
                        .expect("built-in time controls are valid");
                    let spec = PoolSpec::new(time_control, variant, rated, None)
                        .expect("built-in pools are valid");
                    specs.push((spec, MatchingParams::default()));
                }
            }
        }
        Self::from_definitions(specs).expect("built-in pools are distinct")
    }

    /// A catalog of the given pools, in order; `Err` names the first duplicate.
    pub fn from_definitions(
        definitions: impl IntoIterator<Item = (PoolSpec, MatchingParams)>,
    ) -> Result<Self, PoolSpec> {
        let mut catalog = Self {
            pools: Vec::new(),
            by_spec: HashMap::default(),
        };
        for (spec, params) in definitions {
            catalog.push(spec, params)?;
        }
        Ok(catalog)
    }

    fn push(&mut self, spec: PoolSpec, params: MatchingParams) -> Result<PoolId, PoolSpec> {
        let id = PoolId(u16::try_from(self.pools.len()).map_err(|_| spec.clone())?);
        if self.by_spec.insert(spec.clone(), id).is_some() {
            return Err(spec);
        }
        self.pools.push(PoolDefinition { id, spec, params });
        Ok(id)
    }

    /// Reads a pools file.
    pub fn load(path: &Path) -> Result<Self, PoolsFileError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| PoolsFileError {
            origin: origin.clone(),
            line: None,
            field: None,
            message: error.to_string(),
        })?;
        Self::parse(&text, &origin)
    }

    /// Parses the text of a pools file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PoolsFileError> {
        pools_file::parse(text, origin)
    }

    /// The pool with this spec.
    pub fn resolve(&self, spec: &PoolSpec) -> Option<PoolId> {
        self.by_spec.get(spec).copied()
    }

    /// The pool at `id`.
    ///
    /// # Panics
    /// When `id` does not come from this catalog.
    pub fn get(&self, id: PoolId) -> &PoolDefinition {
        &self.pools[usize::from(id.0)]
    }

    /// The pool at `id`, or `None` when `id` is not from this catalog.
    pub fn try_get(&self, id: PoolId) -> Option<&PoolDefinition> {
        self.pools.get(usize::from(id.0))
    }

    /// Every pool, in catalog order.
    pub fn iter(&self) -> impl Iterator<Item = &PoolDefinition> {
        self.pools.iter()
    }

    /// Number of pools.
    pub fn len(&self) -> usize {
        self.pools.len()
    }

    /// Whether the catalog has no pools (a pools file may not produce one).
    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }
}

/// A pools file that could not be used; the message names the line and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}{}{}: {message}", line.map(|line| format!(":{line}")).unwrap_or_default(), field.as_ref().map(|field| format!(": field `{field}`")).unwrap_or_default())]
pub struct PoolsFileError {
    /// The file (or other origin) the text came from.
    pub origin: String,
    /// 1-based line of the problem, when known.
    pub line: Option<usize>,
    /// The field at fault, when one is.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

mod pools_file {
    //! The pools file format:
    //!
    //! ```toml
    //! [defaults]            # optional: overrides the built-in matching parameters
    //! initial_window = 100
    //! widen_by = 25
    //! widen_every_s = 10
    //! max_window = 500
    //! max_wait_s = 600
    //! wave_interval_ms = 200
    //! pacing = "eager"      # or "quality"
    //! target_wait_s = 3     # quality pacing only (a default here serves every quality pool)
    //!
    //! [[pool]]
    //! time_control = "5+3"   # required
    //! variant = "standard"   # default "standard"
    //! rated = true           # default true
    //! region = "eu"          # optional
    //! wave_interval_ms = 100 # any matching parameter may be overridden per pool
    //! ```

    use super::*;

    /// One table of the file: `[defaults]` and every `[[pool]]` share this shape, so one set
    /// of parameter fields (with their spans, for error lines) serves both.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        time_control: Option<Spanned<String>>,
        variant: Option<Spanned<String>>,
        rated: Option<Spanned<bool>>,
        region: Option<Spanned<String>>,
        initial_window: Option<Spanned<i64>>,
        widen_by: Option<Spanned<i64>>,
        widen_every_s: Option<Spanned<i64>>,
        max_window: Option<Spanned<i64>>,
        max_wait_s: Option<Spanned<i64>>,
        wave_interval_ms: Option<Spanned<i64>>,
        pacing: Option<Spanned<String>>,
        target_wait_s: Option<Spanned<Seconds>>,
    }

    /// A duration in seconds, whole or not (`3` or `2.5`).
    #[derive(Clone, Copy)]
    struct Seconds(f64);

    impl<'de> Deserialize<'de> for Seconds {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Number;
            impl serde::de::Visitor<'_> for Number {
                type Value = Seconds;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a number of seconds")
                }
                fn visit_i64<E>(self, value: i64) -> Result<Seconds, E> {
                    Ok(Seconds(value as f64))
                }
                fn visit_u64<E>(self, value: u64) -> Result<Seconds, E> {
                    Ok(Seconds(value as f64))
                }
                fn visit_f64<E>(self, value: f64) -> Result<Seconds, E> {
                    Ok(Seconds(value))
                }
            }
            deserializer.deserialize_any(Number)
        }
    }

    /// What a table hands down: its parameters, and the target wait that a pool choosing
    /// quality pacing gets (`[defaults]` may set it without choosing quality itself).
    #[derive(Clone, Copy)]
    struct Resolved {
        params: MatchingParams,
        target_wait_ms: u64,
    }

    impl Default for Resolved {
        fn default() -> Self {
            Self {
                params: MatchingParams::default(),
                target_wait_ms: Pacing::DEFAULT_TARGET_WAIT_MS,
            }
        }
    }

    /// Which table a section is.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Table {
        Defaults,
        Pool,
    }

    /// Where a section is: its table, and its offset in the text (for errors about fields
    /// it inherits rather than sets).
    #[derive(Clone, Copy)]
    struct Place {
        table: Table,
        at: usize,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        defaults: Option<Spanned<Section>>,
        #[serde(default)]
        pool: Vec<Spanned<Section>>,
    }

    struct Context<'a> {
        text: &'a str,
        origin: &'a str,
    }

    impl Context<'_> {
        fn line_of(&self, offset: usize) -> usize {
            self.text.as_bytes()[..offset.min(self.text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1
        }

        fn error(
            &self,
            offset: Option<usize>,
            field: Option<&str>,
            message: impl Into<String>,
        ) -> PoolsFileError {
            PoolsFileError {
                origin: self.origin.to_owned(),
                line: offset.map(|offset| self.line_of(offset)),
                field: field.map(str::to_owned),
                message: message.into(),
            }
        }

        fn field_error<T>(
            &self,
            field: &str,
            value: &Spanned<T>,
            message: impl Into<String>,
        ) -> PoolsFileError {
            self.error(Some(value.span().start), Some(field), message)
        }

        fn bounded(
            &self,
            field: &str,
            value: &Option<Spanned<i64>>,
            min: i64,
            max: i64,
        ) -> Result<Option<u64>, PoolsFileError> {
            let Some(value) = value else { return Ok(None) };
            let number = *value.get_ref();
            if (min..=max).contains(&number) {
                Ok(Some(number as u64))
            } else {
                Err(self.field_error(
                    field,
                    value,
                    format!("{number} is out of range {min}..={max}"),
                ))
            }
        }

        fn params(
            &self,
            section: &Section,
            inherited: Resolved,
            place: Place,
        ) -> Result<Resolved, PoolsFileError> {
            let at = place.at;
            let base = inherited.params;
            let max = i64::from(MAX_RATING);
            let window = |field, value| {
                self.bounded(field, value, 0, max)
                    .map(|v| v.map(|v| v as u16))
            };
            let params = MatchingParams {
                initial_window: window("initial_window", &section.initial_window)?
                    .unwrap_or(base.initial_window),
                widen_by: window("widen_by", &section.widen_by)?.unwrap_or(base.widen_by),
                widen_every_ms: self
                    .bounded("widen_every_s", &section.widen_every_s, 1, 3_600)?
                    .map_or(base.widen_every_ms, |s| s * 1_000),
                max_window: window("max_window", &section.max_window)?.unwrap_or(base.max_window),
                max_wait_ms: self
                    .bounded("max_wait_s", &section.max_wait_s, 1, 86_400)?
                    .map_or(base.max_wait_ms, |s| s * 1_000),
                wave_interval_ms: self
                    .bounded("wave_interval_ms", &section.wave_interval_ms, 10, 600_000)?
                    .unwrap_or(base.wave_interval_ms),
                pacing: base.pacing,
            };
            if params.max_window < params.initial_window {
                let offset = section
                    .max_window
                    .as_ref()
                    .or(section.initial_window.as_ref())
                    .map_or(at, |v| v.span().start);
                return Err(self.error(
                    Some(offset),
                    Some("max_window"),
                    format!(
                        "max_window ({}) is smaller than initial_window ({})",
                        params.max_window, params.initial_window
                    ),
                ));
            }
            let resolved = Resolved {
                params,
                ..inherited
            };
            self.pacing(section, resolved, place)
        }

        /// The pacing part of [`Self::params`]: `pacing` and `target_wait_s`, checked against
        /// the table's other parameters.
        fn pacing(
            &self,
            section: &Section,
            inherited: Resolved,
            Place { table, at }: Place,
        ) -> Result<Resolved, PoolsFileError> {
            let target_wait_ms = match &section.target_wait_s {
                Some(value) => {
                    let Seconds(seconds) = *value.get_ref();
                    if !(0.1..=3_600.0).contains(&seconds) {
                        return Err(self.field_error(
                            "target_wait_s",
                            value,
                            format!("{seconds} is out of range 0.1..=3600"),
                        ));
                    }
                    (seconds * 1_000.0).round() as u64
                }
                None => inherited.target_wait_ms,
            };
            let quality = match &section.pacing {
                Some(value) => match value.get_ref().as_str() {
                    "eager" => false,
                    "quality" => true,
                    other => {
                        return Err(self.field_error(
                            "pacing",
                            value,
                            format!("{other:?} is neither \"eager\" nor \"quality\""),
                        ));
                    }
                },
                None => matches!(inherited.params.pacing, Pacing::Quality { .. }),
            };
            // `[defaults]` may set a target for the pools that choose quality, unless it says
            // eager itself; a pool's own target must serve its own pacing.
            let target_unused = !quality && (table == Table::Pool || section.pacing.is_some());
            if let Some(value) = section.target_wait_s.as_ref().filter(|_| target_unused) {
                return Err(self.field_error(
                    "target_wait_s",
                    value,
                    "target_wait_s applies to pacing = \"quality\" only",
                ));
            }
            let mut params = inherited.params;
            if quality {
                let offset = section
                    .target_wait_s
                    .as_ref()
                    .map(|v| v.span().start)
                    .or(section.pacing.as_ref().map(|v| v.span().start))
                    .unwrap_or(at);
                let problem = if target_wait_ms < 2 * params.wave_interval_ms {
                    Some(format!(
                        "target_wait_s ({} ms) leaves less than two waves of {} ms",
                        target_wait_ms, params.wave_interval_ms
                    ))
                } else if target_wait_ms >= params.max_wait_ms {
                    Some(format!(
                        "target_wait_s ({} ms) must be shorter than max_wait_s ({} ms)",
                        target_wait_ms, params.max_wait_ms
                    ))
                } else {
                    None
                };
                if let Some(message) = problem {
                    return Err(self.error(Some(offset), Some("target_wait_s"), message));
                }
                params.pacing = Pacing::Quality { target_wait_ms };
            } else {
                params.pacing = Pacing::Eager;
            }
            Ok(Resolved {
                params,
                target_wait_ms,
            })
        }

        fn pool(
            &self,
            section: &Spanned<Section>,
            defaults: Resolved,
        ) -> Result<(PoolSpec, MatchingParams), PoolsFileError> {
            let at = section.span().start;
            let section = section.get_ref();
            let time_control = section.time_control.as_ref().ok_or_else(|| {
                self.error(
                    Some(at),
                    Some("time_control"),
                    "every [[pool]] needs a time_control",
                )
            })?;
            let parsed_time_control: TimeControl =
                time_control
                    .get_ref()
                    .parse()
                    .map_err(|error: PoolSpecError| {
                        self.field_error("time_control", time_control, error.to_string())
                    })?;
            let variant = section
                .variant
                .as_ref()
                .map_or("standard", |v| v.get_ref().as_str());
            let rated = section.rated.as_ref().is_none_or(|rated| *rated.get_ref());
            let region = section.region.as_ref().map(|r| r.get_ref().as_str());
            let spec =
                PoolSpec::new(parsed_time_control, variant, rated, region).map_err(|error| {
                    let (field, value) = match error {
                        PoolSpecError::Region => ("region", section.region.as_ref()),
                        _ => ("variant", section.variant.as_ref()),
                    };
                    self.error(
                        Some(value.map_or(at, |v| v.span().start)),
                        Some(field),
                        error.to_string(),
                    )
                })?;
            let place = Place {
                table: Table::Pool,
                at,
            };
            let resolved = self.params(section, defaults, place)?;
            Ok((spec, resolved.params))
        }
    }

    pub(super) fn parse(text: &str, origin: &str) -> Result<PoolCatalog, PoolsFileError> {
        let context = Context { text, origin };
        let file: File = toml::from_str(text).map_err(|error| {
            let message = error.message().to_owned();
            let field = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
                .map(str::to_owned);
            PoolsFileError {
                field,
                ..context.error(error.span().map(|span| span.start), None, message)
            }
        })?;
        let defaults = match &file.defaults {
            Some(section) => {
                let identity = [(
                    "time_control",
                    section
                        .get_ref()
                        .time_control
                        .as_ref()
                        .map(|v| v.span().start),
                )]
                .into_iter()
                .chain([
                    (
                        "variant",
                        section.get_ref().variant.as_ref().map(|v| v.span().start),
                    ),
                    (
                        "rated",
                        section.get_ref().rated.as_ref().map(|v| v.span().start),
                    ),
                    (
                        "region",
                        section.get_ref().region.as_ref().map(|v| v.span().start),
                    ),
                ]);
                if let Some((field, Some(offset))) =
                    identity.into_iter().find(|(_, offset)| offset.is_some())
                {
                    return Err(context.error(
                        Some(offset),
                        Some(field),
                        "belongs in a [[pool]] table, not in [defaults]",
                    ));
                }
                let place = Place {
                    table: Table::Defaults,
                    at: section.span().start,
                };
                context.params(section.get_ref(), Resolved::default(), place)?
            }
            None => Resolved::default(),
        };
        if file.pool.is_empty() {
            return Err(context.error(None, None, "the file defines no [[pool]]"));
        }
        let mut catalog = PoolCatalog {
            pools: Vec::new(),
            by_spec: HashMap::default(),
        };
        for section in &file.pool {
            let (spec, params) = context.pool(section, defaults)?;
            catalog.push(spec, params).map_err(|spec| {
                context.error(
                    Some(section.span().start),
                    Some("time_control"),
                    format!("pool {spec} is defined twice"),
                )
            })?;
        }
        Ok(catalog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_controls_parse_strictly() {
        assert_eq!(
            "5+3".parse::<TimeControl>().unwrap(),
            TimeControl::new(5, 3).unwrap()
        );
        assert_eq!("0+1".parse::<TimeControl>().unwrap().to_string(), "0+1");
        for bad in [
            "", "5", "5+", "+3", "0+0", "5+3+1", "181+0", "5 +3", "-1+3", "05+3x", "1000+0",
        ] {
            assert!(
                bad.parse::<TimeControl>().is_err(),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn window_widens_in_steps_up_to_the_maximum() {
        let params = MatchingParams::default();
        assert_eq!(params.window(0), 100);
        assert_eq!(params.window(9_999), 100);
        assert_eq!(params.window(10_000), 125);
        assert_eq!(params.window(35_000), 175);
        assert_eq!(params.window(160_000), 500);
        assert_eq!(params.window(599_000), 500);
        assert!(!params.is_expired(599_999));
        assert!(params.is_expired(600_000));
    }

    #[test]
    fn builtin_catalog_covers_common_time_controls() {
        let catalog = PoolCatalog::builtin();
        assert_eq!(
            catalog.len(),
            BUILTIN_TIME_CONTROLS.len() * BUILTIN_VARIANTS.len() * 2
        );
        let blitz = PoolSpec::new("5+3".parse().unwrap(), "chess960", false, None).unwrap();
        let id = catalog
            .resolve(&blitz)
            .expect("5+3 chess960 casual is built in");
        assert_eq!(catalog.get(id).spec, blitz);
        assert_eq!(catalog.get(id).params, MatchingParams::default());
        let regional = PoolSpec::new("5+3".parse().unwrap(), "standard", true, Some("eu")).unwrap();
        assert_eq!(catalog.resolve(&regional), None);
    }

    #[test]
    fn pools_file_sets_defaults_and_overrides() {
        let text = r#"
[defaults]
widen_by = 50
max_wait_s = 120

[[pool]]
time_control = "3+2"

[[pool]]
time_control = "3+2"
variant = "chess960"
rated = false
region = "eu"
wave_interval_ms = 50
"#;
        let catalog = PoolCatalog::parse(text, "pools.toml").unwrap();
        assert_eq!(catalog.len(), 2);
        let first = catalog.get(PoolId(0));
        assert_eq!(
            first.spec,
            PoolSpec::new("3+2".parse().unwrap(), "standard", true, None).unwrap()
        );
        assert_eq!(first.params.widen_by, 50);
        assert_eq!(first.params.max_wait_ms, 120_000);
        assert_eq!(first.params.wave_interval_ms, 200);
        let second = catalog.get(PoolId(1));
        assert_eq!(second.spec.region.as_deref(), Some("eu"));
        assert_eq!(second.params.wave_interval_ms, 50);
        assert_eq!(second.params.widen_by, 50);
    }

    fn rejection(text: &str) -> PoolsFileError {
        PoolCatalog::parse(text, "pools.toml").expect_err("the file must be rejected")
    }

    #[test]
    fn invalid_pools_files_name_line_and_field() {
        let bad_time_control = rejection("[[pool]]\ntime_control = \"5+x\"\n");
        assert_eq!(
            (bad_time_control.line, bad_time_control.field.as_deref()),
            (Some(2), Some("time_control"))
        );
        assert!(
            bad_time_control
                .to_string()
                .starts_with("pools.toml:2: field `time_control`: "),
            "{bad_time_control}"
        );

        let out_of_range = rejection("[[pool]]\ntime_control = \"1+0\"\n\n\nmax_window = 9000\n");
        assert_eq!(
            (out_of_range.line, out_of_range.field.as_deref()),
            (Some(5), Some("max_window"))
        );

        let unknown = rejection("[[pool]]\ntime_control = \"1+0\"\nwindow = 3\n");
        assert_eq!(
            (unknown.line, unknown.field.as_deref()),
            (Some(3), Some("window"))
        );

        let inverted =
            rejection("[[pool]]\ntime_control = \"1+0\"\ninitial_window = 300\nmax_window = 200\n");
        assert_eq!(
            (inverted.line, inverted.field.as_deref()),
            (Some(4), Some("max_window"))
        );

        let wrong_type = rejection("[[pool]]\ntime_control = \"1+0\"\nrated = \"yes\"\n");
        assert_eq!(wrong_type.line, Some(3));

        let duplicate =
            rejection("[[pool]]\ntime_control = \"1+0\"\n[[pool]]\ntime_control = \"1+0\"\n");
        assert_eq!(duplicate.line, Some(3));
        assert!(duplicate.message.contains("defined twice"));

        let misplaced =
            rejection("[defaults]\nvariant = \"standard\"\n[[pool]]\ntime_control = \"1+0\"\n");
        assert_eq!(
            (misplaced.line, misplaced.field.as_deref()),
            (Some(2), Some("variant"))
        );

        let missing = rejection("[[pool]]\nvariant = \"standard\"\n");
        assert_eq!(missing.field.as_deref(), Some("time_control"));

        let bad_region = rejection("[[pool]]\ntime_control = \"1+0\"\nregion = \"EU West\"\n");
        assert_eq!(
            (bad_region.line, bad_region.field.as_deref()),
            (Some(3), Some("region"))
        );

        assert!(rejection("").message.contains("no [[pool]]"));
        assert!(rejection("[[pool]\n").line.is_some());
    }

    #[test]
    fn pacing_comes_from_defaults_or_the_pool() {
        let text = r#"
[defaults]
target_wait_s = 5

[[pool]]
time_control = "3+2"

[[pool]]
time_control = "5+3"
pacing = "quality"

[[pool]]
time_control = "10+0"
pacing = "quality"
target_wait_s = 2.5
"#;
        let catalog = PoolCatalog::parse(text, "pools.toml").unwrap();
        let pacing: Vec<Pacing> = catalog.iter().map(|pool| pool.params.pacing).collect();
        assert_eq!(
            pacing,
            [
                Pacing::Eager,
                Pacing::Quality {
                    target_wait_ms: 5_000
                },
                Pacing::Quality {
                    target_wait_ms: 2_500
                },
            ]
        );
        let quality_by_default = "[defaults]\npacing = \"quality\"\n[[pool]]\ntime_control = \"1+0\"\n[[pool]]\ntime_control = \"2+1\"\npacing = \"eager\"\n";
        let catalog = PoolCatalog::parse(quality_by_default, "pools.toml").unwrap();
        assert_eq!(
            catalog.get(PoolId(0)).params.pacing,
            Pacing::Quality {
                target_wait_ms: Pacing::DEFAULT_TARGET_WAIT_MS
            }
        );
        assert_eq!(catalog.get(PoolId(1)).params.pacing, Pacing::Eager);
        assert_eq!(Pacing::Eager.name(), "eager");
    }

    #[test]
    fn invalid_pacing_is_rejected_with_line_and_field() {
        let cases = [
            (
                "[[pool]]\ntime_control = \"1+0\"\npacing = \"lazy\"\n",
                3,
                "pacing",
            ),
            (
                "[[pool]]\ntime_control = \"1+0\"\ntarget_wait_s = 3\n",
                3,
                "target_wait_s",
            ),
            (
                "[[pool]]\ntime_control = \"1+0\"\npacing = \"eager\"\ntarget_wait_s = 3\n",
                4,
                "target_wait_s",
            ),
            (
                "[defaults]\npacing = \"eager\"\ntarget_wait_s = 3\n[[pool]]\ntime_control = \"1+0\"\n",
                3,
                "target_wait_s",
            ),
            (
                "[[pool]]\ntime_control = \"1+0\"\npacing = \"quality\"\ntarget_wait_s = 0\n",
                4,
                "target_wait_s",
            ),
            (
                "[[pool]]\ntime_control = \"1+0\"\npacing = \"quality\"\ntarget_wait_s = 0.3\n",
                4,
                "target_wait_s",
            ),
            (
                "[[pool]]\ntime_control = \"1+0\"\nmax_wait_s = 60\npacing = \"quality\"\ntarget_wait_s = 60\n",
                5,
                "target_wait_s",
            ),
            (
                "[defaults]\ntarget_wait_s = 700\n[[pool]]\ntime_control = \"1+0\"\npacing = \"quality\"\n",
                5,
                "target_wait_s",
            ),
        ];
        for (text, line, field) in cases {
            let error = rejection(text);
            assert_eq!(
                (error.line, error.field.as_deref()),
                (Some(line), Some(field)),
                "{text}: {error}"
            );
        }
        let wrong_type = rejection(
            "[[pool]]\ntime_control = \"1+0\"\npacing = \"quality\"\ntarget_wait_s = \"3\"\n",
        );
        assert_eq!(wrong_type.line, Some(4));
        assert!(
            wrong_type.message.contains("a number of seconds"),
            "{wrong_type}"
        );
    }
}
