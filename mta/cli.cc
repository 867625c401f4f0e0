#include "mta/cli.h"

#include <CLI/CLI.hpp>
#include <string>

#include "absl/strings/str_cat.h"
#include "mta/config.h"
#include "mta/daemon.h"
#include "mta/version.h"

namespace peregrine {
namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

int Serve(const std::string& config_path, const std::string& data_dir,
          std::ostream& err) {
  absl::StatusOr<Config> config =
      config_path.empty() ? DefaultConfig() : LoadConfigFile(config_path);
  if (!config.ok()) {
    err << "peregrine: configuration error:\n"
        << config.status().message() << "\n";
    return kExitUsage;
  }
  Daemon daemon(*std::move(config), config_path, data_dir);
  absl::Status started = daemon.Start();
  if (!started.ok()) {
    err << "peregrine: cannot start: " << started.message() << "\n";
    return started.code() == absl::StatusCode::kUnavailable ? kExitRuntime
                                                            : kExitUsage;
  }
  return daemon.Run();
}

int ConfigCheck(const std::string& path, std::ostream& out, std::ostream& err) {
  auto config = LoadConfigFile(path);
  if (!config.ok()) {
    err << config.status().message() << "\n";
    return kExitUsage;
  }
  out << path << ": OK (" << config->lines.size()
      << " settings from the file, the rest default)\n";
  return 0;
}

}  // namespace

int RunCli(int argc, const char* const* argv, std::ostream& out,
           std::ostream& err) {
  CLI::App app{"Peregrine: a high-throughput mail transfer agent.",
               "peregrine"};
  app.set_version_flag("--version", absl::StrCat("peregrine ", kVersion));
  app.require_subcommand(1);

  std::string config_path, data_dir;
  CLI::App* serve = app.add_subcommand(
      "serve",
      "Run the MTA (no --config: built-in defaults on loopback ports)");
  serve->add_option("-c,--config", config_path, "TOML configuration file");
  serve->add_option("--data-dir", data_dir,
                    "Queue directory (overrides server.data_dir)");

  CLI::App* config =
      app.add_subcommand("config", "Check or print configuration");
  config->require_subcommand(1);
  std::string check_path;
  CLI::App* check = config->add_subcommand(
      "check", "Validate a configuration file; exit 2 naming each problem");
  check->add_option("file", check_path, "TOML configuration file")->required();
  CLI::App* defaults = config->add_subcommand(
      "defaults", "Print the full default configuration, every key commented");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e, out, err);
    return rc == 0 ? 0 : kExitUsage;
  }

  if (*serve) return Serve(config_path, data_dir, err);
  if (*check) return ConfigCheck(check_path, out, err);
  if (*defaults) {
    out << DefaultConfigToml();
    return 0;
  }
  return kExitUsage;
}

}  // namespace peregrine
