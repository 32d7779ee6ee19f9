// A Hugging Face directory: config.json plus the weights in model.safetensors, in shards listed by
// model.safetensors.index.json, or (neither present) in every *.safetensors file of the directory.
// Every file is mapped and its header validated once; then each tensor the config requires is
// looked up, shape-checked and converted, the conversions in parallel.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "loader_internal.h"
#include "macserve/core/error.h"
#include "macserve/models/loader/safetensors.h"
#include "mmap_file.h"
#include "parallel.h"

namespace macserve::models {
namespace {
namespace fs = std::filesystem;

struct Shard {
  std::shared_ptr<MappedFile> file;
  SafetensorsHeader header;
};

// Where each tensor lives: an index file's weight_map, or the union of the shards' headers.
struct WeightIndex {
  std::string source;                                    // named in "missing tensor" errors
  std::map<std::string, Shard> shards;                   // file path -> mapping + header
  std::unordered_map<std::string, std::string> file_of;  // tensor name -> file path
};

Shard open_shard(const std::string& path) {
  Shard s;
  s.file = MappedFile::open(path);
  s.header = parse_safetensors_header(s.file->bytes(), path);
  return s;
}

// The shard file names of an index must stay inside the model directory.
std::string shard_path(const fs::path& dir, const std::string& name,
                       const std::string& index_path) {
  const fs::path rel(name);
  const bool escapes =
      std::any_of(rel.begin(), rel.end(), [](const fs::path& p) { return p == ".."; });
  if (name.empty() || rel.is_absolute() || escapes)
    throw_error(ErrorCode::kInvalidModel,
                "{}: weight_map names file '{}' outside the model directory", index_path, name);
  return (dir / rel).string();
}

WeightIndex read_index(const fs::path& dir, const std::string& index_path) {
  std::ifstream in(index_path, std::ios::binary);
  const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    throw_error(ErrorCode::kInvalidModel, "{}: not a JSON object", index_path);
  auto map = j.find("weight_map");
  if (map == j.end() || !map->is_object())
    throw_error(ErrorCode::kInvalidModel, "{}: missing object 'weight_map'", index_path);
  WeightIndex index;
  index.source = index_path;
  for (const auto& [name, file] : map->items()) {
    if (!file.is_string())
      throw_error(ErrorCode::kInvalidModel, "{}: weight_map entry '{}' is not a file name",
                  index_path, name);
    const std::string path = shard_path(dir, file.get<std::string>(), index_path);
    index.file_of[name] = path;
    if (!index.shards.count(path)) index.shards.emplace(path, open_shard(path));
  }
  return index;
}

// Without an index, the files' own headers say where each tensor is.
WeightIndex index_files(const std::vector<std::string>& files, const std::string& source) {
  WeightIndex index;
  index.source = source;
  for (const auto& path : files) {
    Shard shard = open_shard(path);
    for (const auto& [name, info] : shard.header.tensors) {
      auto [it, inserted] = index.file_of.emplace(name, path);
      if (!inserted)
        throw_error(ErrorCode::kInvalidModel, "{}: tensor '{}' is also in {}", path, name,
                    it->second);
    }
    index.shards.emplace(path, std::move(shard));
  }
  return index;
}

WeightIndex open_weights(const fs::path& dir) {
  const fs::path index_path = dir / "model.safetensors.index.json";
  if (fs::exists(index_path)) return read_index(dir, index_path.string());
  const fs::path single = dir / "model.safetensors";
  if (fs::exists(single)) return index_files({single.string()}, single.string());
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  if (files.empty())
    throw_error(ErrorCode::kNotFound,
                "{}: no model.safetensors, model.safetensors.index.json or *.safetensors",
                dir.string());
  return index_files(files, dir.string());
}

struct Job {
  const std::string* name;
  const SafetensorsTensorInfo* info;
  const Shard* shard;
  const std::string* path;
};

}  // namespace

Checkpoint load_safetensors_checkpoint(const std::string& dir_path) {
  const fs::path dir(dir_path);
  if (!fs::is_directory(dir))
    throw_error(ErrorCode::kNotFound,
                "{}: not a directory (a Hugging Face model directory is expected)", dir_path);
  Checkpoint ckpt;
  ckpt.config = read_hf_config(dir_path);
  const WeightIndex index = open_weights(dir);
  const auto expected = sorted_expected_shapes(ckpt.config);

  // Check everything before converting anything, so a bad file fails fast.
  std::vector<Job> jobs;
  jobs.reserve(expected.size());
  for (const auto& [name, shape] : expected) {
    auto f = index.file_of.find(name);
    if (f == index.file_of.end()) throw_missing_tensor(index.source, name);
    const Shard& shard = index.shards.at(f->second);
    auto t = shard.header.tensors.find(name);
    if (t == shard.header.tensors.end()) throw_missing_tensor(f->second, name);
    check_tensor_shape(f->second, name, t->second.shape, shape);
    if (t->second.dtype != "F32" && t->second.dtype != "F16" && t->second.dtype != "BF16")
      throw_error(ErrorCode::kUnsupported,
                  "{}: tensor '{}' has dtype {}, which is not supported (F32, F16, BF16)",
                  f->second, name, t->second.dtype);
    jobs.push_back({&name, &t->second, &shard, &f->second});
  }

  std::vector<Tensor> tensors(jobs.size());
  parallel_for(static_cast<int64_t>(jobs.size()), [&](int64_t i) {
    const Job& job = jobs[static_cast<std::size_t>(i)];
    tensors[static_cast<std::size_t>(i)] =
        safetensors_tensor_to_f32(*job.name, *job.info, job.shard->header, job.shard->file->bytes(),
                                  job.shard->file, *job.path);
  });
  for (std::size_t i = 0; i < jobs.size(); ++i)
    ckpt.weights.emplace(*jobs[i].name, std::move(tensors[i]));
  return ckpt;
}

}  // namespace macserve::models
