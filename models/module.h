// nn::Module: a tree of named parameters, buffers and child modules whose dotted names and file
// layouts follow timm/PyTorch state dicts, so timm checkpoints (safetensors) load as they are.
#pragma once
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "engine/ops.h"
#include "io/safetensors.h"

namespace mokd::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Registration. Parameters are leaf tensors with requires_grad set; buffers never require grad.
  // The returned handle shares its TensorImpl with the registry: to() and load_state_dict()
  // update that impl in place, so handles kept in members stay valid.
  Tensor register_parameter(const std::string& name, Tensor t);
  Tensor register_buffer(const std::string& name, Tensor t);
  template <class M>
  M& register_module(const std::string& name, std::unique_ptr<M> m) {
    M& ref = *m;
    add_child(name, std::move(m));
    return ref;
  }

  // Recursive, own entries first then children in registration order; dotted names
  // ("blocks.3.attn.qkv.weight"). Tensors are in the engine's layout (see state_dict for files).
  NamedTensors named_parameters() const;
  NamedTensors named_buffers() const;
  std::vector<Tensor> parameters() const;
  int64_t num_parameters() const;
  const std::vector<std::pair<std::string, std::unique_ptr<Module>>>& children() const {
    return children_;
  }

  // Training mode, recursive (dropout, drop-path, batch-norm statistics).
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Moves every parameter and buffer to dev in place (gradients are dropped).
  void to(Device dev);
  Device device() const;

  // Parameters and buffers in FILE layout (timm's names, shapes and layouts, e.g. OIHW
  // convolution weights), as fresh tensors on the module's device.
  io::TensorMap state_dict() const;
  // Checks names and file-layout shapes first and throws one mokd::Error that lists every missing,
  // unexpected and wrong-shape entry (missing/unexpected only when strict; a wrong shape always
  // fails, as in PyTorch). An entry a module declares optional (absent_value) may be missing even
  // when strict and takes that value. Entries named in keep (each must be one of the model's) are
  // not loaded and keep their values whatever the file holds for them, or lacks: a classifier head
  // left fresh for fine-tuning. Nothing is modified when it throws. Values are converted to each
  // tensor's dtype and device.
  void load_state_dict(const io::TensorMap& sd, bool strict = true,
                       const std::set<std::string>& keep = {});

  // Drops every parameter's .grad.
  void zero_grad();

 protected:
  // Per-module layout hooks for a local tensor name: engine layout -> file layout and back, and
  // the file shape of an engine tensor. Default: identical layouts.
  virtual Tensor to_file(const std::string& local_name, const Tensor& t) const { return t; }
  virtual Tensor from_file(const std::string& local_name, const Tensor& t) const { return t; }
  virtual Shape file_shape(const std::string& local_name, const Tensor& t) const {
    return t.shape();
  }
  // The file-layout value an entry takes when a state dict lacks it, for entries older files may
  // omit (BatchNorm2d's num_batches_tracked); undefined (the default): the entry is required.
  virtual Tensor absent_value(const std::string& local_name, const Tensor& t) const {
    return Tensor();
  }
  // Called on every module after train(on) changed the flag.
  virtual void on_train(bool on) {}

 private:
  void add_child(const std::string& name, std::unique_ptr<Module> m);
  void check_new_name(const std::string& name) const;
  struct Entry {
    std::string full;  // dotted name from the root
    const Module* owner;
    std::string local;  // name inside owner
    Tensor t;
  };
  void collect(const std::string& prefix, bool params, bool buffers, std::vector<Entry>& out) const;

  NamedTensors params_;
  NamedTensors buffers_;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace mokd::nn
