// Thin RAII layer over the HDF5 C API, used by the dump reader and writer (docs/dump-format.md).
//
// Why the C API and not H5Cpp: the HDF Group has announced the end of the C++ interface and
// HighFive is not packaged on Debian 12 (engineering-notes §2.7). Everything here is small on
// purpose: an owning hid_t, typed attribute access, and the custom 16-bit float types that HDF5
// 1.10 lacks (fp16 with h5py's recipe, bf16 with the same recipe and bf16's field layout).
//
// HDF5's own error stack printing is silenced once (H5Eset_auto) when this module is first used;
// every failing call becomes a sparge::Error whose message the caller composes (file, object,
// fault). The serial HDF5 library is not thread-safe: callers hold h5_mutex() around HDF5 calls.
#pragma once

#include <hdf5.h>

#include <array>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace sparge::io::h5 {

// Process-wide lock for HDF5 calls (Debian's libhdf5 is built without --enable-threadsafe).
std::recursive_mutex& h5_mutex();

// Turns off HDF5's automatic error-stack printing (idempotent; called by every entry point).
void silence_errors();

// Owns one hid_t and closes it with the matching H5?close on destruction.
class Hid {
 public:
  Hid() = default;
  explicit Hid(hid_t id) : id_(id) {}
  ~Hid() { reset(); }
  Hid(const Hid&) = delete;
  Hid& operator=(const Hid&) = delete;
  Hid(Hid&& o) noexcept : id_(o.id_) { o.id_ = H5I_INVALID_HID; }
  Hid& operator=(Hid&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      o.id_ = H5I_INVALID_HID;
    }
    return *this;
  }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  explicit operator bool() const { return valid(); }
  void reset();
  // Closes now and reports whether HDF5 accepted the close (a file close flushes data).
  bool close();

 private:
  hid_t id_ = H5I_INVALID_HID;
};

// Custom little-endian 16-bit float types (see file comment). The returned type is owned.
Hid make_float16_type();
Hid make_bfloat16_type();

// Which of our element types an HDF5 datatype is; nullopt for anything else.
enum class Elem { kFloat16, kBFloat16, kFloat32 };
std::optional<Elem> classify_float_type(hid_t type);
const char* elem_name(Elem e);  // "float16", "bfloat16", "float32" (the sparge_dtype attribute)

// Link existence that never throws (H5Lexists fails on a missing intermediate group).
bool link_exists(hid_t loc, const std::string& name);
bool attr_exists(hid_t obj, const std::string& name);

// Names of the links in a group, in name order.
std::vector<std::string> list_links(hid_t group);

// Attribute readers: nullopt when the attribute is absent; throw std::runtime_error with a short
// fault text (the caller prefixes file and object) when it has the wrong type.
std::optional<std::string> read_string_attr(hid_t obj, const std::string& name);
std::optional<int64_t> read_int_attr(hid_t obj, const std::string& name);
std::optional<double> read_double_attr(hid_t obj, const std::string& name);
std::optional<std::vector<int64_t>> read_int_array_attr(hid_t obj, const std::string& name);
// Any scalar or 1-D numeric/string attribute as text (for DumpInfo::attributes and inspect).
std::string attr_as_text(hid_t obj, const std::string& name);
std::vector<std::string> list_attrs(hid_t obj);

// Attribute writers: return false on failure (the caller names the file).
bool write_string_attr(hid_t obj, const std::string& name, const std::string& value);
bool write_int_attr(hid_t obj, const std::string& name, int64_t value);
bool write_double_attr(hid_t obj, const std::string& name, double value);
bool write_int_array_attr(hid_t obj, const std::string& name, const std::vector<int64_t>& value);

}  // namespace sparge::io::h5
