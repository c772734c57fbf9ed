// Q/K/V dump v1: reader (validating, lazy, head-range reads) and atomic writer. The format is
// documented in docs/dump-format.md; the API in dump.hpp.
#include "io/dump.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <fstream>
#include <random>
#include <set>

#include "common/atomic_file.hpp"
#include "common/error.hpp"
#include "io/h5.hpp"

namespace sparge::io {
namespace fs = std::filesystem;
using h5::Hid;

namespace {

constexpr const char* kSchema = "sparge.qkv-dump";
constexpr int kSchemaMajor = 1;

std::string layer_name(int layer) { return fmt::format("{:03d}", layer); }
std::string sample_name(int sample) { return fmt::format("{:04d}", sample); }
std::string sample_path(int layer, int sample) {
  return fmt::format("/layers/{}/samples/{}", layer_name(layer), sample_name(sample));
}

// "007" -> 7; nullopt for anything that is not a non-negative decimal number.
std::optional<int> parse_index(const std::string& s) {
  int v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty() || v < 0) return std::nullopt;
  return v;
}

at::ScalarType to_scalar(h5::Elem e) {
  switch (e) {
    case h5::Elem::kFloat16:
      return at::kHalf;
    case h5::Elem::kBFloat16:
      return at::kBFloat16;
    case h5::Elem::kFloat32:
      return at::kFloat;
  }
  return at::kFloat;
}

std::optional<h5::Elem> to_elem(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return h5::Elem::kFloat16;
    case at::kBFloat16:
      return h5::Elem::kBFloat16;
    case at::kFloat:
      return h5::Elem::kFloat32;
    default:
      return std::nullopt;
  }
}

// The in-memory type for raw reads and writes: identical to what the writer stores, so HDF5
// copies bits without conversion (bit-exact fp16/bf16); any other float layout gets converted.
Hid canonical_type(h5::Elem e) {
  switch (e) {
    case h5::Elem::kFloat16:
      return h5::make_float16_type();
    case h5::Elem::kBFloat16:
      return h5::make_bfloat16_type();
    case h5::Elem::kFloat32:
      return Hid(H5Tcopy(H5T_IEEE_F32LE));
  }
  return Hid();
}

std::string shape_str(const std::vector<int64_t>& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Reader

struct DumpReader::Impl {
  fs::path path;
  Hid file;
  DumpInfo info;
  std::map<int, size_t> layer_pos;  // NNN -> position in info.layers

  [[noreturn]] void bad(const std::string& object, const std::string& fault) const {
    fail(ExitCode::kDataError, "{}: {}: {}", path.string(), object, fault);
  }

  // Runs an attribute accessor, turning its type faults into one-line data errors.
  template <typename F>
  auto attr(const std::string& object, F&& f) const {
    try {
      return f();
    } catch (const std::runtime_error& e) {
      bad(object, e.what());
    }
  }

  void open();
  void read_root();
  void read_layer(const std::string& name);
  // Validates one of q/k/v/o: rank 4, a supported dtype; returns its shape and element type.
  std::pair<std::vector<int64_t>, h5::Elem> probe_dataset(hid_t group, const std::string& gpath,
                                                          const std::string& name) const;
  const SampleInfo& sample(int layer, int sample) const;
};

void DumpReader::Impl::open() {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(ExitCode::kNoInput, "{}: no such file", path.string());
  if (fs::is_directory(path, ec)) fail(ExitCode::kNoInput, "{}: is a directory", path.string());
  if (std::ifstream probe(path, std::ios::binary); !probe) {
    fail(ExitCode::kNoInput, "{}: cannot be read (permission denied?)", path.string());
  }
  if (fs::file_size(path, ec) == 0 || H5Fis_hdf5(path.c_str()) <= 0) {
    fail(ExitCode::kDataError, "{}: not an HDF5 file", path.string());
  }
  file = Hid(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!file) {
    fail(ExitCode::kDataError, "{}: truncated or corrupt HDF5 file (cannot be opened)",
         path.string());
  }
  read_root();
  Hid layers(H5Gopen2(file.get(), "/layers", H5P_DEFAULT));
  if (!layers)
    bad("/layers", h5::link_exists(file.get(), "layers") ? "corrupt group" : "missing group");
  std::vector<std::string> names;
  try {
    names = h5::list_links(layers.get());
  } catch (const std::runtime_error& e) {
    bad("/layers", e.what());
  }
  if (names.empty()) bad("/layers", "no layers");
  for (const auto& n : names) read_layer(n);
  auto num_layers = attr("/", [&] { return h5::read_int_attr(file.get(), "num_layers"); });
  if (num_layers && *num_layers != static_cast<int64_t>(info.layers.size())) {
    bad("/",
        fmt::format("num_layers is {} but /layers has {} layers", *num_layers, info.layers.size()));
  }
}

void DumpReader::Impl::read_root() {
  const hid_t root = file.get();
  auto schema = attr("/", [&] { return h5::read_string_attr(root, "schema"); });
  if (!schema) bad("/", "no 'schema' attribute (not a sparge Q/K/V dump)");
  if (*schema != kSchema) bad("/", fmt::format("schema is '{}', expected '{}'", *schema, kSchema));
  if (!h5::attr_exists(root, "schema_version")) bad("/", "no 'schema_version' attribute");
  const std::string version = attr("/", [&] { return h5::attr_as_text(root, "schema_version"); });
  auto major = parse_index(version.substr(0, version.find('.')));
  if (!major) bad("/", fmt::format("schema_version '{}' is not a version number", version));
  if (*major != kSchemaMajor) {
    bad("/",
        fmt::format("unknown schema_version {} (this sparge reads {})", version, kSchemaMajor));
  }
  info.schema_version = *major;

  auto str = [&](const char* name) {
    return attr("/", [&] { return h5::read_string_attr(root, name); }).value_or("");
  };
  auto integer = [&](const char* name) {
    return attr("/", [&] { return h5::read_int_attr(root, name); });
  };
  info.producer = str("producer");
  info.model_id = str("model_id");
  info.capture_point = str("capture_point");
  const std::string layout = str("layout");
  if (!layout.empty() && layout != "BHND") {
    bad("/", fmt::format("layout '{}' is not supported (tensors must be stored BHND)", layout));
  }
  const int64_t causal = integer("causal").value_or(0);
  if (causal != 0 && causal != 1) bad("/", fmt::format("causal is {}, expected 0 or 1", causal));
  info.causal = causal != 0;
  info.scale = attr("/", [&] { return h5::read_double_attr(root, "scale"); });
  if (info.scale && !(*info.scale > 0.0)) bad("/", fmt::format("scale {} is not > 0", *info.scale));
  if (auto grid = attr("/", [&] { return h5::read_int_array_attr(root, "grid"); })) {
    if (grid->size() != 3)
      bad("/", fmt::format("grid has {} values, expected 3 (T, H, W)", grid->size()));
    for (auto g : *grid) {
      if (g < 1) bad("/", fmt::format("grid {} has a non-positive size", shape_str(*grid)));
    }
    info.grid = std::array<int, 3>{static_cast<int>((*grid)[0]), static_cast<int>((*grid)[1]),
                                   static_cast<int>((*grid)[2])};
  }
  info.text_prefix = static_cast<int>(integer("text_prefix").value_or(0));
  info.text_suffix = static_cast<int>(integer("text_suffix").value_or(0));
  if (info.text_prefix < 0 || info.text_suffix < 0) bad("/", "negative text_prefix/text_suffix");
  std::vector<std::string> names;
  try {
    names = h5::list_attrs(root);
  } catch (const std::runtime_error& e) {
    bad("/", e.what());
  }
  for (const auto& n : names)
    info.attributes[n] = attr("/", [&] { return h5::attr_as_text(root, n); });
}

std::pair<std::vector<int64_t>, h5::Elem> DumpReader::Impl::probe_dataset(
    hid_t group, const std::string& gpath, const std::string& name) const {
  const std::string object = gpath + "/" + name;
  Hid ds(H5Dopen2(group, name.c_str(), H5P_DEFAULT));
  if (!ds) bad(object, h5::link_exists(group, name) ? "corrupt dataset" : "missing dataset");
  Hid space(H5Dget_space(ds.get()));
  const int rank = space ? H5Sget_simple_extent_ndims(space.get()) : -1;
  if (rank < 0) bad(object, "corrupt dataspace");
  if (rank != 4) bad(object, fmt::format("rank {}, expected 4 [B, H, N, D]", rank));
  hsize_t dims[4];
  H5Sget_simple_extent_dims(space.get(), dims, nullptr);
  std::vector<int64_t> shape(dims, dims + 4);
  for (auto d : shape) {
    if (d < 1) bad(object, fmt::format("empty shape {}", shape_str(shape)));
  }
  Hid type(H5Dget_type(ds.get()));
  auto elem = type ? h5::classify_float_type(type.get()) : std::nullopt;
  if (!elem) bad(object, "unsupported element type (expected float16, bfloat16 or float32)");
  auto tag = attr(object, [&] { return h5::read_string_attr(ds.get(), "sparge_dtype"); });
  if (tag && *tag != h5::elem_name(*elem)) {
    bad(object, fmt::format("sparge_dtype says '{}' but the stored type is {}", *tag,
                            h5::elem_name(*elem)));
  }
  return {shape, *elem};
}

void DumpReader::Impl::read_layer(const std::string& name) {
  const std::string gpath = "/layers/" + name;
  auto index = parse_index(name);
  if (!index) bad(gpath, "layer group name is not a number");
  Hid g(H5Gopen2(file.get(), gpath.c_str(), H5P_DEFAULT));
  if (!g) bad(gpath, "not a group or corrupt");
  LayerInfo layer;
  layer.index = *index;
  auto req_int = [&](hid_t obj, const std::string& object, const char* a) -> int64_t {
    auto v = attr(object, [&] { return h5::read_int_attr(obj, a); });
    if (!v) bad(object, fmt::format("missing attribute '{}'", a));
    return *v;
  };
  if (auto li = attr(gpath, [&] { return h5::read_int_attr(g.get(), "layer_index"); });
      li && *li != layer.index) {
    bad(gpath, fmt::format("layer_index attribute {} disagrees with the group name", *li));
  }
  layer.module_path =
      attr(gpath, [&] { return h5::read_string_attr(g.get(), "module_path"); }).value_or("");
  layer.num_q_heads = static_cast<int>(req_int(g.get(), gpath, "num_q_heads"));
  layer.num_kv_heads = static_cast<int>(req_int(g.get(), gpath, "num_kv_heads"));
  layer.head_dim = static_cast<int>(req_int(g.get(), gpath, "head_dim"));
  if (layer.num_q_heads < 1 || layer.num_kv_heads < 1 || layer.head_dim < 1) {
    bad(gpath, "num_q_heads, num_kv_heads and head_dim must be >= 1");
  }
  if (layer.num_q_heads % layer.num_kv_heads != 0) {
    bad(gpath, fmt::format("num_q_heads {} is not a multiple of num_kv_heads {}", layer.num_q_heads,
                           layer.num_kv_heads));
  }

  const std::string spath = gpath + "/samples";
  Hid samples(H5Gopen2(g.get(), "samples", H5P_DEFAULT));
  if (!samples) bad(spath, h5::link_exists(g.get(), "samples") ? "corrupt group" : "missing group");
  std::vector<std::string> names;
  try {
    names = h5::list_links(samples.get());
  } catch (const std::runtime_error& e) {
    bad(spath, e.what());
  }
  if (names.empty()) bad(spath, "no samples");
  for (const auto& sname : names) {
    const std::string path_s = spath + "/" + sname;
    auto sindex = parse_index(sname);
    if (!sindex) bad(path_s, "sample group name is not a number");
    Hid sg(H5Gopen2(samples.get(), sname.c_str(), H5P_DEFAULT));
    if (!sg) bad(path_s, "not a group or corrupt");
    SampleInfo s;
    s.index = *sindex;
    auto opt_int = [&](const char* a) -> std::optional<int> {
      auto v = attr(path_s, [&] { return h5::read_int_attr(sg.get(), a); });
      return v ? std::optional<int>(static_cast<int>(*v)) : std::nullopt;
    };
    if (auto si = opt_int("sample_index"); si && *si != s.index) {
      bad(path_s, fmt::format("sample_index attribute {} disagrees with the group name", *si));
    }
    s.step = opt_int("step_index");
    s.prompt = opt_int("prompt_index");

    auto [qs, qe] = probe_dataset(sg.get(), path_s, "q");
    auto [ks, ke] = probe_dataset(sg.get(), path_s, "k");
    auto [vs, ve] = probe_dataset(sg.get(), path_s, "v");
    if (qe != ke || qe != ve) {
      bad(path_s, fmt::format("q, k, v have different dtypes ({}, {}, {})", h5::elem_name(qe),
                              h5::elem_name(ke), h5::elem_name(ve)));
    }
    if (qs[3] != ks[3]) {
      bad(path_s, fmt::format("head dim mismatch: q {} vs k {}", shape_str(qs), shape_str(ks)));
    }
    if (ks != vs)
      bad(path_s, fmt::format("k {} and v {} differ in shape", shape_str(ks), shape_str(vs)));
    if (qs[0] != ks[0]) {
      bad(path_s, fmt::format("batch mismatch: q {} vs k {}", shape_str(qs), shape_str(ks)));
    }
    if (qs[1] % ks[1] != 0) {
      bad(path_s,
          fmt::format("q heads {} not a multiple of kv heads {} (H % Hkv != 0)", qs[1], ks[1]));
    }
    if (qs[1] != layer.num_q_heads || ks[1] != layer.num_kv_heads || qs[3] != layer.head_dim) {
      bad(path_s, fmt::format("shapes q {} k {} disagree with the layer's num_q_heads {}, "
                              "num_kv_heads {}, head_dim {}",
                              shape_str(qs), shape_str(ks), layer.num_q_heads, layer.num_kv_heads,
                              layer.head_dim));
    }
    if (info.grid) {
      const int64_t n = int64_t{(*info.grid)[0]} * (*info.grid)[1] * (*info.grid)[2] +
                        info.text_prefix + info.text_suffix;
      if (qs[2] != n || ks[2] != n) {
        bad(path_s, fmt::format("sequence lengths q {} / kv {} disagree with grid {}x{}x{} + {} "
                                "+ {} text tokens = {}",
                                qs[2], ks[2], (*info.grid)[0], (*info.grid)[1], (*info.grid)[2],
                                info.text_prefix, info.text_suffix, n));
      }
    }
    if (h5::link_exists(sg.get(), "o")) {
      auto [os, oe] = probe_dataset(sg.get(), path_s, "o");
      if (os != qs)
        bad(path_s, fmt::format("o {} and q {} differ in shape", shape_str(os), shape_str(qs)));
      if (oe != qe) bad(path_s, "o has a different dtype from q");
      s.has_o = true;
    }
    s.q_shape = qs;
    s.kv_shape = ks;
    s.dtype = to_scalar(qe);
    layer.samples.push_back(std::move(s));
  }
  layer_pos[layer.index] = info.layers.size();
  info.layers.push_back(std::move(layer));
}

const SampleInfo& DumpReader::Impl::sample(int layer_index, int sample_index) const {
  auto it = layer_pos.find(layer_index);
  if (it == layer_pos.end())
    bad(fmt::format("/layers/{}", layer_name(layer_index)), "no such layer");
  for (const auto& s : info.layers[it->second].samples) {
    if (s.index == sample_index) return s;
  }
  bad(sample_path(layer_index, sample_index), "no such sample");
}

DumpReader::DumpReader(const fs::path& path) : impl_(std::make_unique<Impl>()) {
  std::lock_guard lock(h5::h5_mutex());
  h5::silence_errors();
  impl_->path = path;
  impl_->open();
}

DumpReader::~DumpReader() {
  if (impl_) {
    std::lock_guard lock(h5::h5_mutex());
    impl_.reset();
  }
}
DumpReader::DumpReader(DumpReader&&) noexcept = default;
DumpReader& DumpReader::operator=(DumpReader&&) noexcept = default;

const DumpInfo& DumpReader::info() const { return impl_->info; }
const fs::path& DumpReader::path() const { return impl_->path; }

const LayerInfo& DumpReader::layer(int layer_index) const {
  auto it = impl_->layer_pos.find(layer_index);
  if (it == impl_->layer_pos.end()) {
    fail(ExitCode::kDataError, "{}: /layers/{}: no such layer", impl_->path.string(),
         layer_name(layer_index));
  }
  return impl_->info.layers[it->second];
}

// Returns [B, H', N, D] in the stored dtype, H' = the requested head range; bits are copied as
// stored (fp16/bf16 read into kHalf/kBFloat16 storage without conversion).
at::Tensor DumpReader::read(int layer_index, int sample_index, const std::string& which,
                            std::optional<std::pair<int, int>> heads, bool check_finite) const {
  std::lock_guard lock(h5::h5_mutex());
  const Impl& im = *impl_;
  const SampleInfo& s = im.sample(layer_index, sample_index);
  const std::string object = sample_path(layer_index, sample_index) + "/" + which;
  std::vector<int64_t> shape;
  if (which == "q" || (which == "o" && s.has_o)) {
    shape = s.q_shape;
  } else if (which == "k" || which == "v") {
    shape = s.kv_shape;
  } else if (which == "o") {
    im.bad(object, "missing dataset (the dump has no outputs for this sample)");
  } else {
    fail(ExitCode::kUsage, "unknown tensor '{}' (expected q, k, v or o)", which);
  }
  int h0 = 0, h1 = static_cast<int>(shape[1]);
  if (heads) {
    std::tie(h0, h1) = *heads;
    if (h0 < 0 || h1 > shape[1] || h0 >= h1) {
      fail(ExitCode::kUsage, "{}: {}: head range [{}, {}) outside [0, {})", im.path.string(),
           object, h0, h1, shape[1]);
    }
  }
  Hid ds(H5Dopen2(im.file.get(), object.c_str(), H5P_DEFAULT));
  if (!ds) im.bad(object, "cannot open dataset");
  Hid fspace(H5Dget_space(ds.get()));
  const hsize_t start[4] = {0, static_cast<hsize_t>(h0), 0, 0};
  const hsize_t count[4] = {static_cast<hsize_t>(shape[0]), static_cast<hsize_t>(h1 - h0),
                            static_cast<hsize_t>(shape[2]), static_cast<hsize_t>(shape[3])};
  if (!fspace ||
      H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr) < 0) {
    im.bad(object, "cannot select heads");
  }
  Hid mspace(H5Screate_simple(4, count, nullptr));
  const h5::Elem elem = *to_elem(s.dtype);
  Hid mtype = canonical_type(elem);
  at::Tensor out = at::empty({shape[0], h1 - h0, shape[2], shape[3]}, at::dtype(s.dtype));
  if (H5Dread(ds.get(), mtype.get(), mspace.get(), fspace.get(), H5P_DEFAULT, out.data_ptr()) < 0) {
    im.bad(object, "read failed (truncated or corrupt file)");
  }
  if (check_finite) {
    const int64_t nan = at::isnan(out).sum().item<int64_t>();
    const int64_t inf = at::isinf(out).sum().item<int64_t>();
    if (nan + inf > 0) {
      im.bad(object, fmt::format("{} NaN and {} Inf values in {} {}", nan, inf, which,
                                 shape_str(out.sizes().vec())));
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// Writer

struct DumpWriter::Impl {
  fs::path path;
  fs::path tmp;
  std::optional<TempFileGuard> tmp_guard;  // SIGINT/SIGTERM remove the temporary
  Hid file;
  Hid layers;
  DumpInfo root;
  std::map<int, LayerInfo> written;  // layer -> heads/dim and samples written
  bool closed = false;

  [[noreturn]] void io_fail(const std::string& what) const {
    fail(ExitCode::kIoError, "{}: cannot write: {}", path.string(), what);
  }

  // Group creation properties: link creation order tracked (h5ls shows layers in capture order
  // even without zero padding) and no timestamps (identical inputs give identical files).
  Hid group_plist() const {
    Hid p(H5Pcreate(H5P_GROUP_CREATE));
    if (!p ||
        H5Pset_link_creation_order(p.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) < 0 ||
        H5Pset_obj_track_times(p.get(), false) < 0) {
      io_fail("cannot create group properties");
    }
    return p;
  }

  Hid create_group(hid_t parent, const std::string& name) const {
    Hid gcpl = group_plist();
    Hid g(H5Gcreate2(parent, name.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT));
    if (!g) io_fail(fmt::format("cannot create group {}", name));
    return g;
  }

  Hid open_or_create(hid_t parent, const std::string& name) const {
    if (h5::link_exists(parent, name)) {
      Hid g(H5Gopen2(parent, name.c_str(), H5P_DEFAULT));
      if (!g) io_fail(fmt::format("cannot open group {}", name));
      return g;
    }
    return create_group(parent, name);
  }

  void write_dataset(hid_t group, const std::string& object, const std::string& name,
                     const at::Tensor& t) const {
    const at::Tensor c = t.detach().to(at::kCPU).contiguous();
    const h5::Elem elem = *to_elem(c.scalar_type());
    const hsize_t dims[4] = {static_cast<hsize_t>(c.size(0)), static_cast<hsize_t>(c.size(1)),
                             static_cast<hsize_t>(c.size(2)), static_cast<hsize_t>(c.size(3))};
    // One chunk per (batch, head): reading one head touches one chunk (docs/dump-format.md).
    const hsize_t chunk[4] = {1, 1, dims[2], dims[3]};
    Hid space(H5Screate_simple(4, dims, nullptr));
    Hid dcpl(H5Pcreate(H5P_DATASET_CREATE));
    Hid type = canonical_type(elem);
    if (!space || !dcpl || H5Pset_chunk(dcpl.get(), 4, chunk) < 0 ||
        H5Pset_obj_track_times(dcpl.get(), false) < 0) {
      io_fail(fmt::format("{}/{}: cannot set up the dataset", object, name));
    }
    Hid ds(H5Dcreate2(group, name.c_str(), type.get(), space.get(), H5P_DEFAULT, dcpl.get(),
                      H5P_DEFAULT));
    if (!ds || H5Dwrite(ds.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, c.data_ptr()) < 0 ||
        !h5::write_string_attr(ds.get(), "sparge_dtype", h5::elem_name(elem))) {
      io_fail(fmt::format("{}/{}: write failed (disk full?)", object, name));
    }
  }
};

DumpWriter::DumpWriter(const fs::path& path, const DumpInfo& root_info)
    : impl_(std::make_unique<Impl>()) {
  std::lock_guard lock(h5::h5_mutex());
  h5::silence_errors();
  Impl& im = *impl_;
  im.path = path;
  im.root = root_info;
  std::random_device rd;
  im.tmp = fs::path(path).concat(fmt::format(".tmp.{}.{:08x}", ::getpid(), rd()));
  if (root_info.scale && !(*root_info.scale > 0.0)) {
    fail(ExitCode::kUsage, "{}: scale {} is not > 0", path.string(), *root_info.scale);
  }
  Hid fcpl(H5Pcreate(H5P_FILE_CREATE));
  if (!fcpl ||
      H5Pset_link_creation_order(fcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) < 0) {
    im.io_fail("cannot create file properties");
  }
  // Strong close degree: closing the file closes every object still open in it, so a failed
  // write (disk full) can never leave a handle for HDF5's atexit teardown to trip over.
  Hid fapl(H5Pcreate(H5P_FILE_ACCESS));
  if (!fapl || H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG) < 0)
    im.io_fail("cannot create file access properties");
  im.tmp_guard.emplace(im.tmp);
  im.file = Hid(H5Fcreate(im.tmp.c_str(), H5F_ACC_EXCL, fcpl.get(), fapl.get()));
  if (!im.file) im.io_fail("cannot create the file (missing directory or no permission?)");
  try {
    const hid_t r = im.file.get();
    bool ok = h5::write_string_attr(r, "schema", kSchema) &&
              h5::write_int_attr(r, "schema_version", kSchemaMajor) &&
              h5::write_string_attr(r, "producer", root_info.producer) &&
              h5::write_string_attr(r, "model_id", root_info.model_id) &&
              h5::write_string_attr(r, "capture_point", root_info.capture_point) &&
              h5::write_string_attr(r, "layout", "BHND") &&
              h5::write_int_attr(r, "causal", root_info.causal ? 1 : 0) &&
              h5::write_int_attr(r, "text_prefix", root_info.text_prefix) &&
              h5::write_int_attr(r, "text_suffix", root_info.text_suffix);
    if (ok && root_info.scale) ok = h5::write_double_attr(r, "scale", *root_info.scale);
    if (ok && root_info.grid) {
      const auto& g = *root_info.grid;
      ok = h5::write_int_array_attr(r, "grid", {g[0], g[1], g[2]});
    }
    static const std::set<std::string> kReserved = {
        "schema", "schema_version", "producer",    "model_id", "capture_point", "layout",
        "causal", "text_prefix",    "text_suffix", "scale",    "grid",          "num_layers"};
    for (const auto& [k, v] : root_info.attributes) {
      if (ok && !kReserved.count(k)) ok = h5::write_string_attr(r, k, v);
    }
    if (!ok) im.io_fail("cannot write the root attributes");
    im.layers = im.create_group(r, "layers");
  } catch (...) {
    im.layers.reset();
    im.file.reset();
    std::error_code ec;
    fs::remove(im.tmp, ec);
    throw;
  }
}

DumpWriter::~DumpWriter() {
  if (!impl_ || impl_->closed) return;
  std::lock_guard lock(h5::h5_mutex());
  impl_->layers.reset();
  impl_->file.reset();
  std::error_code ec;
  fs::remove(impl_->tmp, ec);
}

void DumpWriter::write_sample(int layer_index, const std::string& module_path, int sample_index,
                              const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const std::optional<at::Tensor>& o, std::optional<int> step,
                              std::optional<int> prompt) {
  std::lock_guard lock(h5::h5_mutex());
  Impl& im = *impl_;
  SPARGE_ASSERT(!im.closed, "write_sample after close");
  const std::string object = sample_path(layer_index, sample_index);
  auto bad = [&](const std::string& fault) {
    fail(ExitCode::kDataError, "{}: {}: {}", im.path.string(), object, fault);
  };
  if (layer_index < 0 || sample_index < 0) bad("negative layer or sample index");
  for (const at::Tensor* t : {&q, &k, &v}) {
    if (t->dim() != 4) bad(fmt::format("tensor of rank {}, expected 4 [B, H, N, D]", t->dim()));
    if (!to_elem(t->scalar_type()))
      bad(fmt::format("unsupported dtype {}", toString(t->scalar_type())));
    if (t->scalar_type() != q.scalar_type()) bad("q, k, v have different dtypes");
    if (t->numel() == 0) bad("empty tensor");
  }
  if (q.size(0) != k.size(0) || q.size(3) != k.size(3) || !k.sizes().equals(v.sizes())) {
    bad(fmt::format("inconsistent shapes q {} k {} v {}", shape_str(q.sizes().vec()),
                    shape_str(k.sizes().vec()), shape_str(v.sizes().vec())));
  }
  if (q.size(1) % k.size(1) != 0) bad("q heads not a multiple of kv heads (H % Hkv != 0)");
  if (o && (!o->sizes().equals(q.sizes()) || o->scalar_type() != q.scalar_type())) {
    bad("o differs from q in shape or dtype");
  }
  if (im.root.grid) {
    const auto& g = *im.root.grid;
    const int64_t n = int64_t{g[0]} * g[1] * g[2] + im.root.text_prefix + im.root.text_suffix;
    if (q.size(2) != n || k.size(2) != n)
      bad(fmt::format("sequence length is not {} (grid + text)", n));
  }

  auto it = im.written.find(layer_index);
  Hid layer;
  if (it == im.written.end()) {
    layer = im.create_group(im.layers.get(), layer_name(layer_index));
    LayerInfo li;
    li.index = layer_index;
    li.module_path = module_path;
    li.num_q_heads = static_cast<int>(q.size(1));
    li.num_kv_heads = static_cast<int>(k.size(1));
    li.head_dim = static_cast<int>(q.size(3));
    const hid_t g = layer.get();
    if (!h5::write_int_attr(g, "layer_index", layer_index) ||
        !h5::write_string_attr(g, "module_path", module_path) ||
        !h5::write_int_attr(g, "num_q_heads", li.num_q_heads) ||
        !h5::write_int_attr(g, "num_kv_heads", li.num_kv_heads) ||
        !h5::write_int_attr(g, "head_dim", li.head_dim)) {
      im.io_fail(fmt::format("/layers/{}: cannot write attributes", layer_name(layer_index)));
    }
    it = im.written.emplace(layer_index, std::move(li)).first;
  } else {
    const LayerInfo& li = it->second;
    if (li.num_q_heads != q.size(1) || li.num_kv_heads != k.size(1) || li.head_dim != q.size(3)) {
      bad("heads or head dim differ from the layer's earlier samples");
    }
    for (const auto& s : li.samples) {
      if (s.index == sample_index) bad("sample written twice");
    }
    layer = Hid(H5Gopen2(im.layers.get(), layer_name(layer_index).c_str(), H5P_DEFAULT));
    if (!layer) im.io_fail("cannot reopen a layer group");
  }
  Hid samples = im.open_or_create(layer.get(), "samples");
  Hid sg = im.create_group(samples.get(), sample_name(sample_index));
  bool ok = h5::write_int_attr(sg.get(), "sample_index", sample_index);
  if (ok && step) ok = h5::write_int_attr(sg.get(), "step_index", *step);
  if (ok && prompt) ok = h5::write_int_attr(sg.get(), "prompt_index", *prompt);
  if (!ok) im.io_fail(fmt::format("{}: cannot write attributes", object));
  im.write_dataset(sg.get(), object, "q", q);
  im.write_dataset(sg.get(), object, "k", k);
  im.write_dataset(sg.get(), object, "v", v);
  if (o) im.write_dataset(sg.get(), object, "o", *o);
  SampleInfo si;
  si.index = sample_index;
  it->second.samples.push_back(si);
}

void DumpWriter::close() {
  std::lock_guard lock(h5::h5_mutex());
  Impl& im = *impl_;
  if (im.closed) return;
  if (!h5::write_int_attr(im.file.get(), "num_layers", static_cast<int64_t>(im.written.size()))) {
    im.io_fail("cannot write num_layers");
  }
  im.layers.reset();
  // Close even when the flush failed: the handle must not outlive this call (HDF5 would flush
  // it again at exit, into the same full disk, and crash).
  const bool flushed = H5Fflush(im.file.get(), H5F_SCOPE_GLOBAL) >= 0;
  const bool file_closed = im.file.close();
  if (!flushed || !file_closed) im.io_fail("flush failed (disk full?)");
  if (int fd = ::open(im.tmp.c_str(), O_RDONLY); fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  std::error_code ec;
  fs::rename(im.tmp, im.path, ec);
  if (ec) im.io_fail(ec.message());
  im.closed = true;
}

bool attribute_true(const DumpInfo& info, std::initializer_list<const char*> keys) {
  for (const char* k : keys) {
    auto it = info.attributes.find(k);
    if (it != info.attributes.end()) {
      const auto& v = it->second;
      return v == "1" || v == "true" || v == "True" || v == "TRUE";
    }
  }
  return false;
}

}  // namespace sparge::io
