//! Settings of the `simulator` binary, from its arguments and environment.
//!
//! Scripts start the simulator with flags, containers with `SIM_*`
//! variables; flags win. Parsing is a pure function of both, so it is
//! tested without touching the real process environment.

use aigw_simulator::{Behaviour, SimOptions};

pub const USAGE: &str = "\
usage: simulator [--port N] [--host H] [--api-key K] [--name NAME] [--behaviour JSON]

  --port N          port to listen on; 0 picks a free one   (env SIM_PORT, default 0)
  --host H          address to bind                          (env SIM_HOST, default 127.0.0.1)
  --api-key K       require this key (api-key or Bearer)     (env SIM_API_KEY)
  --name NAME       name shown in replies and x-sim-name     (env SIM_NAME, default simulator)
  --behaviour JSON  initial behaviour, e.g. '{\"mode\":\"throttle\"}' (env SIM_BEHAVIOUR)
  -h, --help        show this help

  SIM_WORKERS sets the number of runtime worker threads.
  Once bound, prints `simulator listening on http://HOST:PORT`.
  Control: GET /_sim/stats, GET /_sim/requests, GET|PUT /_sim/behaviour, POST /_sim/reset, GET /healthz.";

/// Everything the binary needs to run.
#[derive(Debug, PartialEq, Eq)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub workers: Option<usize>,
    pub opts: SimOptions,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run(Config),
    Help,
}

/// Parses `args` (without the program name), falling back to `env` lookups.
pub fn parse<I, E>(args: I, env: E) -> Result<Command, String>
where
    I: IntoIterator<Item = String>,
    E: Fn(&str) -> Option<String>,
{
    let mut port = env("SIM_PORT");
    let mut host = env("SIM_HOST");
    let mut api_key = env("SIM_API_KEY");
    let mut name = env("SIM_NAME");
    let mut behaviour = env("SIM_BEHAVIOUR");
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let slot = match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--port" => &mut port,
            "--host" => &mut host,
            "--api-key" => &mut api_key,
            "--name" => &mut name,
            "--behaviour" | "--behavior" => &mut behaviour,
            other => return Err(format!("unknown argument {other:?}")),
        };
        let value = match inline {
            Some(value) => value,
            None => args.next().ok_or_else(|| format!("{flag} needs a value"))?,
        };
        *slot = Some(value);
    }
    let port = match port {
        None => 0,
        Some(p) => p
            .trim()
            .parse()
            .map_err(|_| format!("invalid port {p:?}"))?,
    };
    let workers = match env("SIM_WORKERS") {
        None => None,
        Some(w) => match w.trim().parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(format!(
                    "invalid SIM_WORKERS {w:?} (want a positive number)"
                ));
            }
        },
    };
    let behaviour = match behaviour {
        None => Behaviour::default(),
        Some(json) => {
            Behaviour::from_json(json.as_bytes()).map_err(|e| format!("invalid behaviour: {e}"))?
        }
    };
    Ok(Command::Run(Config {
        host: host
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "127.0.0.1".to_owned()),
        port,
        workers,
        opts: SimOptions {
            api_key: api_key.filter(|k| !k.is_empty()),
            behaviour,
            name: name.filter(|n| !n.is_empty()),
        },
    }))
}

#[cfg(test)]
mod tests {
    use aigw_simulator::Mode;

    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        match parse(args.iter().map(|a| (*a).to_owned()), lookup)? {
            Command::Run(config) => Ok(config),
            Command::Help => Err("help".to_owned()),
        }
    }

    #[test]
    fn defaults() {
        let c = run(&[], &[]).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.workers), ("127.0.0.1", 0, None));
        assert_eq!(c.opts, SimOptions::default());
    }

    #[test]
    fn flags_in_both_spellings() {
        let c = run(
            &[
                "--port",
                "8080",
                "--host=0.0.0.0",
                "--api-key",
                "k",
                "--name=east",
                "--behaviour",
                r#"{"mode":"hang"}"#,
            ],
            &[],
        )
        .unwrap();
        assert_eq!((c.host.as_str(), c.port), ("0.0.0.0", 8080));
        assert_eq!(c.opts.api_key.as_deref(), Some("k"));
        assert_eq!(c.opts.name.as_deref(), Some("east"));
        assert_eq!(c.opts.behaviour.mode, Mode::Hang);
    }

    #[test]
    fn environment_fallbacks_and_flag_precedence() {
        let env = [
            ("SIM_PORT", "9000"),
            ("SIM_HOST", "::1"),
            ("SIM_API_KEY", "envkey"),
            ("SIM_NAME", "west"),
            ("SIM_BEHAVIOUR", r#"{"chunks":2}"#),
            ("SIM_WORKERS", "3"),
        ];
        let c = run(&[], &env).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.workers), ("::1", 9000, Some(3)));
        assert_eq!(
            (c.opts.api_key.as_deref(), c.opts.name.as_deref()),
            (Some("envkey"), Some("west"))
        );
        assert_eq!(c.opts.behaviour.chunks, 2);
        assert_eq!(run(&["--port", "1"], &env).unwrap().port, 1);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(run(&["--port"], &[]).is_err());
        assert!(run(&["--port", "70000"], &[]).is_err());
        assert!(run(&["--bogus"], &[]).is_err());
        assert!(run(&["stray"], &[]).is_err());
        assert!(run(&["--behaviour", "{"], &[]).is_err());
        assert!(run(&["--behaviour", r#"{"status":99}"#], &[]).is_err());
        assert!(run(&[], &[("SIM_WORKERS", "0")]).is_err());
        assert!(run(&[], &[("SIM_PORT", "x")]).is_err());
        assert_eq!(run(&["--help"], &[]), Err("help".to_owned()));
    }
}
