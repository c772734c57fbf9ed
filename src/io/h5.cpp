#include "io/h5.hpp"

#include <fmt/format.h>

#include <stdexcept>

namespace sparge::io::h5 {

std::recursive_mutex& h5_mutex() {
  static std::recursive_mutex m;
  return m;
}

namespace {
// No HDF5 teardown at exit: every object sparge opens is closed by its owner, and a file whose
// flush failed (disk full) cannot be closed at all; H5_term_library would flush it again at
// exit(74) and crash (exit 139). Must run before any other HDF5 call: a static initialiser.
const bool kNoAtexit = [] {
  H5dont_atexit();
  return true;
}();
}  // namespace

void silence_errors() {
  (void)kNoAtexit;
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

void Hid::reset() { close(); }

bool Hid::close() {
  if (id_ < 0) return true;
  herr_t rc = -1;
  switch (H5Iget_type(id_)) {
    case H5I_FILE:
      rc = H5Fclose(id_);
      break;
    case H5I_GROUP:
    case H5I_DATASET:
      rc = H5Oclose(id_);
      break;
    case H5I_DATATYPE:
      rc = H5Tclose(id_);
      break;
    case H5I_DATASPACE:
      rc = H5Sclose(id_);
      break;
    case H5I_ATTR:
      rc = H5Aclose(id_);
      break;
    case H5I_GENPROP_LST:
      rc = H5Pclose(id_);
      break;
    default:
      rc = H5Idec_ref(id_) < 0 ? -1 : 0;
      break;
  }
  id_ = H5I_INVALID_HID;
  return rc >= 0;
}

namespace {
// h5py's fp16 recipe for HDF5 < 1.14.4 (h5t.pyx), and the same with bf16's fields: sign at bit
// 15, exponent [epos, epos + esize), mantissa [0, msize), IEEE bias.
Hid make_custom_float(size_t epos, size_t esize, size_t msize, size_t ebias) {
  silence_errors();
  Hid t(H5Tcopy(H5T_IEEE_F32LE));
  if (!t || H5Tset_fields(t.get(), 15, epos, esize, 0, msize) < 0 || H5Tset_size(t.get(), 2) < 0 ||
      H5Tset_ebias(t.get(), ebias) < 0) {
    throw std::runtime_error("cannot create a 16-bit HDF5 float type");
  }
  return t;
}

std::runtime_error attr_fault(const std::string& name, const char* what) {
  return std::runtime_error(fmt::format("attribute '{}': {}", name, what));
}

Hid open_attr(hid_t obj, const std::string& name) {
  if (!attr_exists(obj, name)) return Hid();
  Hid a(H5Aopen(obj, name.c_str(), H5P_DEFAULT));
  if (!a) throw attr_fault(name, "cannot be opened");
  return a;
}

// Number of elements of a scalar or 1-D attribute; throws for higher ranks.
hssize_t attr_points(hid_t attr, const std::string& name) {
  Hid space(H5Aget_space(attr));
  if (!space) throw attr_fault(name, "has no dataspace");
  int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank > 1) throw attr_fault(name, "has rank > 1");
  return H5Sget_simple_extent_npoints(space.get());
}

template <typename T>
std::optional<std::vector<T>> read_numeric(hid_t obj, const std::string& name, H5T_class_t cls,
                                           hid_t mem_type, const char* expected) {
  Hid a = open_attr(obj, name);
  if (!a) return std::nullopt;
  Hid type(H5Aget_type(a.get()));
  H5T_class_t c = H5Tget_class(type.get());
  bool ok = c == cls || (cls == H5T_FLOAT && c == H5T_INTEGER);
  if (!ok) throw attr_fault(name, expected);
  hssize_t n = attr_points(a.get(), name);
  std::vector<T> out(static_cast<size_t>(n));
  if (n > 0 && H5Aread(a.get(), mem_type, out.data()) < 0) throw attr_fault(name, "cannot be read");
  return out;
}

bool write_attr(hid_t obj, const std::string& name, hid_t type, hid_t space, const void* data) {
  if (attr_exists(obj, name) && H5Adelete(obj, name.c_str()) < 0) return false;
  Hid a(H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT));
  return a && H5Awrite(a.get(), type, data) >= 0;
}
}  // namespace

Hid make_float16_type() { return make_custom_float(10, 5, 10, 15); }
Hid make_bfloat16_type() { return make_custom_float(7, 8, 7, 127); }

std::optional<Elem> classify_float_type(hid_t type) {
  if (H5Tget_class(type) != H5T_FLOAT) return std::nullopt;
  size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
  if (H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0) return std::nullopt;
  const size_t size = H5Tget_size(type);
  const size_t bias = H5Tget_ebias(type);
  if (size == 4 && esize == 8 && msize == 23 && bias == 127) return Elem::kFloat32;
  if (size == 2 && spos == 15 && esize == 5 && msize == 10 && bias == 15) return Elem::kFloat16;
  if (size == 2 && spos == 15 && esize == 8 && msize == 7 && bias == 127) return Elem::kBFloat16;
  return std::nullopt;
}

const char* elem_name(Elem e) {
  switch (e) {
    case Elem::kFloat16:
      return "float16";
    case Elem::kBFloat16:
      return "bfloat16";
    case Elem::kFloat32:
      return "float32";
  }
  return "?";
}

bool link_exists(hid_t loc, const std::string& name) {
  silence_errors();
  return H5Lexists(loc, name.c_str(), H5P_DEFAULT) > 0;
}

bool attr_exists(hid_t obj, const std::string& name) {
  silence_errors();
  return H5Aexists(obj, name.c_str()) > 0;
}

std::vector<std::string> list_links(hid_t group) {
  std::vector<std::string> names;
  auto cb = [](hid_t, const char* name, const H5L_info_t*, void* data) -> herr_t {
    static_cast<std::vector<std::string>*>(data)->emplace_back(name);
    return 0;
  };
  hsize_t idx = 0;
  if (H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, &idx, cb, &names) < 0) {
    throw std::runtime_error("cannot list the group's members");
  }
  return names;
}

std::optional<std::string> read_string_attr(hid_t obj, const std::string& name) {
  Hid a = open_attr(obj, name);
  if (!a) return std::nullopt;
  Hid type(H5Aget_type(a.get()));
  if (H5Tget_class(type.get()) != H5T_STRING) throw attr_fault(name, "is not a string");
  if (attr_points(a.get(), name) != 1) throw attr_fault(name, "is not a single string");
  if (H5Tis_variable_str(type.get()) > 0) {
    Hid mem(H5Tcopy(H5T_C_S1));
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
    char* buf = nullptr;
    if (H5Aread(a.get(), mem.get(), &buf) < 0) throw attr_fault(name, "cannot be read");
    std::string out = buf ? buf : "";
    H5free_memory(buf);
    return out;
  }
  const size_t size = H5Tget_size(type.get());
  std::string out(size, '\0');
  Hid mem(H5Tcopy(type.get()));
  if (H5Aread(a.get(), mem.get(), out.data()) < 0) throw attr_fault(name, "cannot be read");
  out.resize(out.find('\0') == std::string::npos ? size : out.find('\0'));
  return out;
}

std::optional<int64_t> read_int_attr(hid_t obj, const std::string& name) {
  auto v = read_numeric<int64_t>(obj, name, H5T_INTEGER, H5T_NATIVE_INT64, "is not an integer");
  if (!v) return std::nullopt;
  if (v->size() != 1) throw attr_fault(name, "is not a single integer");
  return v->front();
}

std::optional<double> read_double_attr(hid_t obj, const std::string& name) {
  auto v = read_numeric<double>(obj, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, "is not a number");
  if (!v) return std::nullopt;
  if (v->size() != 1) throw attr_fault(name, "is not a single number");
  return v->front();
}

std::optional<std::vector<int64_t>> read_int_array_attr(hid_t obj, const std::string& name) {
  return read_numeric<int64_t>(obj, name, H5T_INTEGER, H5T_NATIVE_INT64, "is not integers");
}

std::string attr_as_text(hid_t obj, const std::string& name) {
  Hid a = open_attr(obj, name);
  if (!a) return "";
  Hid type(H5Aget_type(a.get()));
  switch (H5Tget_class(type.get())) {
    case H5T_STRING:
      return read_string_attr(obj, name).value_or("");
    case H5T_INTEGER: {
      auto v = *read_int_array_attr(obj, name);
      if (attr_points(a.get(), name) == 1) return fmt::format("{}", v.front());
      return fmt::format("[{}]", fmt::join(v, ", "));
    }
    case H5T_FLOAT: {
      auto v = *read_numeric<double>(obj, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, "");
      if (v.size() == 1) return fmt::format("{}", v.front());
      return fmt::format("[{}]", fmt::join(v, ", "));
    }
    default:
      return "<unsupported attribute type>";
  }
}

std::vector<std::string> list_attrs(hid_t obj) {
  std::vector<std::string> names;
  auto cb = [](hid_t, const char* name, const H5A_info_t*, void* data) -> herr_t {
    static_cast<std::vector<std::string>*>(data)->emplace_back(name);
    return 0;
  };
  hsize_t idx = 0;
  if (H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, &idx, cb, &names) < 0) {
    throw std::runtime_error("cannot list attributes");
  }
  return names;
}

bool write_string_attr(hid_t obj, const std::string& name, const std::string& value) {
  Hid type(H5Tcopy(H5T_C_S1));
  if (!type || H5Tset_size(type.get(), H5T_VARIABLE) < 0 ||
      H5Tset_cset(type.get(), H5T_CSET_UTF8) < 0) {
    return false;
  }
  Hid space(H5Screate(H5S_SCALAR));
  const char* p = value.c_str();
  return space && write_attr(obj, name, type.get(), space.get(), &p);
}

bool write_int_attr(hid_t obj, const std::string& name, int64_t value) {
  Hid space(H5Screate(H5S_SCALAR));
  return space && write_attr(obj, name, H5T_NATIVE_INT64, space.get(), &value);
}

bool write_double_attr(hid_t obj, const std::string& name, double value) {
  Hid space(H5Screate(H5S_SCALAR));
  return space && write_attr(obj, name, H5T_NATIVE_DOUBLE, space.get(), &value);
}

bool write_int_array_attr(hid_t obj, const std::string& name, const std::vector<int64_t>& value) {
  const hsize_t n = value.size();
  Hid space(H5Screate_simple(1, &n, nullptr));
  return space && write_attr(obj, name, H5T_NATIVE_INT64, space.get(), value.data());
}

}  // namespace sparge::io::h5
