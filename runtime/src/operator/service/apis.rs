//! The hosted APIs: each loaded from its configuration (a plugin kept by its content
//! hash, see [`crate::operator::versions`]), all of them replaced at once by a reload,
//! and a job's API at the version it was submitted with.
//!
//! A reload loads every API of the new file beside the running ones (an unchanged
//! plugin is not loaded again), and swaps them in only when all of them loaded: a file
//! with any error changes nothing. A job holds the API it was submitted to for its
//! whole life, so a reload changes only the jobs submitted after it.

use super::*;
use crate::operator::versions;
use crate::plugin::LoadOptions;

/// One hosted API: its settings and, for a plugin, its compiled module.
pub(super) struct Api {
    pub(super) config: ApiConfig,
    pub(super) plugin: Option<Arc<Plugin>>,
    /// The plugin's content hash (what jobs record).
    pub(super) version: Option<String>,
    /// How the plugin was loaded (a reload with the same plugin and options keeps it).
    options: Option<LoadOptions>,
    pub(super) endpoints: Vec<Endpoint>,
    pub(super) metrics: Arc<Metrics>,
}

/// The APIs by name.
pub(super) type Apis = HashMap<String, Arc<Api>>;

/// What a reload changed, by API name.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Reloaded {
    /// APIs that are new.
    pub added: Vec<String>,
    /// APIs no longer configured: they take no new jobs; their running jobs go on.
    pub removed: Vec<String>,
    /// APIs with another plugin or other settings, for the jobs submitted from now.
    pub changed: Vec<String>,
    /// APIs as they were.
    pub unchanged: Vec<String>,
    /// Service-wide settings that changed and apply at the next start.
    pub restart_needed: Vec<String>,
}

/// How APIs are loaded.
pub(super) struct Loader<'a> {
    pub(super) data_dir: &'a std::path::Path,
    pub(super) cache_dir: Option<PathBuf>,
    pub(super) broker: bool,
    pub(super) max_running_jobs: usize,
    pub(super) metrics: &'a Metrics,
}

impl Loader<'_> {
    /// Loads `api`; `previous` is the API of that name now running (its metrics are
    /// kept, and its plugin when the content and the options are the same).
    pub(super) fn load(&self, api: &ApiConfig, previous: Option<&Arc<Api>>) -> Result<Arc<Api>, String> {
        let metrics = previous.map_or_else(|| self.metrics.for_api(&api.name), |p| p.metrics.clone());
        let mut loaded =
            Api { config: api.clone(), plugin: None, version: None, options: None, endpoints: Vec::new(), metrics };
        match &api.handler {
            // With a broker, the workers have the handlers.
            _ if self.broker => {}
            Handler::Workers => {
                return Err("no `plugin` and no `endpoints`: without a broker the operator needs one of them".into());
            }
            Handler::Plugin(path) => {
                let code = if path.extension().is_some_and(|e| e == "py") {
                    crate::python::component(path, self.cache_dir.as_deref()).map_err(|e| e.to_string())?
                } else {
                    path.clone()
                };
                let (hash, kept) = versions::keep(self.data_dir, &code)?;
                let options = api.load_options(self.max_running_jobs, self.cache_dir.clone());
                let same =
                    previous.filter(|p| p.version.as_ref() == Some(&hash) && p.options.as_ref() == Some(&options));
                let plugin = match same.and_then(|p| p.plugin.clone()) {
                    Some(plugin) => plugin,
                    None => {
                        let plugin = Plugin::load(&kept, &options, loaded.metrics.clone())
                            // Named as configured, not as kept.
                            .map_err(|e| {
                                e.to_string().replace(&kept.display().to_string(), &path.display().to_string())
                            })?;
                        tracing::info!(
                            api_name = api.name,
                            plugin = %path.display(),
                            version = &hash[..12],
                            module = plugin.origin().as_str(),
                            max_memory_mib = plugin.max_memory() >> 20,
                            "plugin loaded"
                        );
                        Arc::new(plugin)
                    }
                };
                (loaded.plugin, loaded.version, loaded.options) = (Some(plugin), Some(hash), Some(options));
            }
            Handler::Endpoints(urls) => {
                loaded.endpoints = urls.iter().map(|u| Endpoint::parse(u)).collect::<Result<Vec<_>, _>>()?;
            }
        }
        Ok(Arc::new(loaded))
    }

    /// `api` as it was when a job of plugin version `hash` was submitted: the same API
    /// when its plugin is that one; else the kept plugin of that content, loaded with
    /// the API's settings of now; or why it cannot be.
    pub(super) fn at_version(&self, api: &Arc<Api>, hash: &str) -> Result<Arc<Api>, String> {
        if api.plugin.is_none() || api.version.as_deref() == Some(hash) {
            return Ok(api.clone());
        }
        let path = versions::kept(self.data_dir, hash)?;
        let options = api.config.load_options(self.max_running_jobs, self.cache_dir.clone());
        let plugin = Plugin::load(&path, &options, api.metrics.clone()).map_err(|e| e.to_string())?;
        Ok(Arc::new(Api {
            config: api.config.clone(),
            plugin: Some(Arc::new(plugin)),
            version: Some(hash.to_string()),
            options: Some(options),
            endpoints: Vec::new(),
            metrics: api.metrics.clone(),
        }))
    }
}

impl Service {
    fn loader(&self) -> Loader<'_> {
        Loader {
            data_dir: self.data_dir(),
            cache_dir: self.cache_dir.clone(),
            broker: self.dispatch.is_some(),
            max_running_jobs: self.running.total(),
            metrics: &self.metrics,
        }
    }

    /// The APIs hosted now.
    pub(super) fn apis(&self) -> Arc<Apis> {
        self.apis.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The API `name` hosted now.
    pub(super) fn api(&self, name: &str) -> Option<Arc<Api>> {
        self.apis().get(name).cloned()
    }

    /// The API a job runs on: the one it was submitted to, at the plugin version the
    /// journal recorded for it.
    pub(super) fn api_of(&self, row: &JobRow) -> Result<Arc<Api>, String> {
        let api = self.api(&row.api_name).ok_or("its API is no longer configured")?;
        match &row.plugin {
            None => Ok(api),
            Some(hash) => self.loader().at_version(&api, hash).map_err(|why| {
                format!("it runs plugin version {}, which cannot be loaded: {why}", &hash[..hash.len().min(12)])
            }),
        }
    }

    /// Re-reads the configuration file the service started with (SIGHUP, `wasmbatch
    /// reload`, the dashboard's button).
    pub(crate) fn reload_file(&self) -> Result<Reloaded, ServiceError> {
        let path = self.config_path.as_deref().ok_or_else(|| ServiceError::Config(vec!["no file to reload".into()]))?;
        let config =
            OperatorConfig::load(path, self.dispatch.is_some()).map_err(|e| ServiceError::Config(e.lines()))?;
        self.reload(config)
    }

    /// Replaces the APIs with those of `config`, all or none: an API that does not
    /// load refuses the whole configuration (every problem named), and nothing changes.
    pub(crate) fn reload(&self, config: OperatorConfig) -> Result<Reloaded, ServiceError> {
        let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let started = std::time::Instant::now();
        let current = self.apis();
        let loader = self.loader();
        let mut problems = Vec::new();
        let mut next = Apis::new();
        for api in &config.apis {
            match loader.load(api, current.get(&api.name)) {
                Ok(loaded) => {
                    next.insert(api.name.clone(), loaded);
                }
                Err(e) => problems.push(format!("api {}: {e}", api.name)),
            }
        }
        if let Some(dispatch) = &self.dispatch {
            for (name, api) in &next {
                if let Some(old) = current.get(name).filter(|old| old.config.max_attempts != api.config.max_attempts) {
                    problems.push(format!(
                        "api {name}: max_attempts: the broker's queue of this API was declared to deliver a batch {} \
                         times; another limit needs a restart with that queue deleted",
                        old.config.max_attempts
                    ));
                }
            }
            if problems.is_empty() {
                let infos = next
                    .iter()
                    .map(|(name, api)| {
                        (name.clone(), ApiInfo { max_attempts: api.config.max_attempts, metrics: api.metrics.clone() })
                    })
                    .collect();
                if let Err(e) = dispatch.set_apis(infos) {
                    problems.push(e);
                }
            }
        }
        if !problems.is_empty() {
            tracing::warn!(problems = problems.join("; "), "configuration not reloaded; the running one stays");
            return Err(ServiceError::Config(problems));
        }
        let old = self.config();
        let mut reloaded = Reloaded::default();
        if old.max_workers != config.max_workers {
            reloaded.restart_needed.push("max_workers".into());
        }
        if old.max_running_jobs != config.max_running_jobs {
            reloaded.restart_needed.push("max_running_jobs".into());
        }
        for (name, api) in &next {
            match current.get(name) {
                None => reloaded.added.push(name.clone()),
                Some(old)
                    if old.version == api.version && format!("{:?}", old.config) == format!("{:?}", api.config) =>
                {
                    reloaded.unchanged.push(name.clone())
                }
                Some(_) => reloaded.changed.push(name.clone()),
            }
        }
        reloaded.removed = current.keys().filter(|name| !next.contains_key(*name)).cloned().collect();
        for list in [&mut reloaded.added, &mut reloaded.removed, &mut reloaded.changed, &mut reloaded.unchanged] {
            list.sort();
        }
        *self.apis.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        tracing::info!(
            added = reloaded.added.join(","),
            removed = reloaded.removed.join(","),
            changed = reloaded.changed.join(","),
            restart_needed = reloaded.restart_needed.join(","),
            reload_ms = started.elapsed().as_millis() as u64,
            "configuration reloaded"
        );
        Ok(reloaded)
    }
}
