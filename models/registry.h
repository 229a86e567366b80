// Model registry: names (timm's where one exists) -> configs -> models, with overrides.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "models/model.h"
#include "models/regnet.h"
#include "models/resnet.h"
#include "models/vit.h"

namespace mokd {

// Fields a caller (command line, config file) may override; unset ones keep the registry's value.
struct ModelOverrides {
  std::optional<int64_t> num_classes;
  std::optional<int64_t> img_size;
  std::optional<int64_t> in_chans;
  std::optional<float> drop_path_rate;
  std::optional<float> drop_rate;
  uint64_t seed = 0;  // Stream::Init for the weights, Stream::Dropout for the masks
};

struct ModelSpec {
  enum class Kind { ViT, ResNet, RegNet };
  std::string name;
  std::string description;  // one line, without the parameter count
  Kind kind = Kind::ViT;
  ViTConfig vit;
  ResNetConfig resnet;
  RegNetConfig regnet;
  int64_t num_parameters() const;
};

// All registered names, in a fixed order.
const std::vector<ModelSpec>& model_specs();
// The spec of a name with overrides applied; throws mokd::Error listing the known names.
ModelSpec model_spec(const std::string& name, const ModelOverrides& o = {});
// Builds a spec (any field may have been edited by the caller).
std::unique_ptr<Model> build_model(const ModelSpec& spec, uint64_t seed = 0);
std::unique_ptr<Model> create_model(const std::string& name, const ModelOverrides& o = {});
// {name, "description, N.NM params"} for --help.
std::vector<std::pair<std::string, std::string>> list_models();

}  // namespace mokd
