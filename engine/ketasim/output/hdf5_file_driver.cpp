#include "ketasim/output/hdf5_file_driver.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "ketasim/base/errors.hpp"

namespace ketasim::hdf5_file_driver {
namespace {

// Addresses are file offsets (off_t): at most 2^63 - 1, as sec2 has it.
constexpr haddr_t kMaxAddress = (haddr_t{1} << 63U) - 1;
// Linux transfers at most about 2 GiB per read or write call.
constexpr std::size_t kMaxTransfer = std::size_t{1} << 30U;

// What a file access property list holds for this driver (HDF5 copies it byte for byte).
struct DriverInfo {
  FileControl* control = nullptr;
};

struct File {
  H5FD_t hdf5;  // first: HDF5 sees a File as its H5FD_t
  int descriptor = -1;
  haddr_t end_of_allocation = 0;  // HDF5's "eoa": the space it has allocated
  haddr_t end_of_file = 0;        // HDF5's "eof": the file's size, as far as written
  dev_t device = 0;
  ino_t inode = 0;
  FileControl* control = nullptr;
};

File& file_of(H5FD_t* file) {
  return *reinterpret_cast<File*>(file);
}
const File& file_of(const H5FD_t* file) {
  return *reinterpret_cast<const File*>(file);
}

bool region_overflows(haddr_t address, std::size_t size) {
  return address == HADDR_UNDEF || address > kMaxAddress || size > kMaxAddress || address + size > kMaxAddress;
}

// Puts the failure on HDF5's error stack.
herr_t report(const char* operation, hid_t minor, int error_number) {
  H5Epush2(H5E_DEFAULT, __FILE__, operation, __LINE__, H5E_ERR_CLS, H5E_IO, minor, "%s", std::strerror(error_number));
  return -1;
}

// A failed operation on an open file: reported, and its errno kept for the writer (the first one).
herr_t fail(FileControl* control, const char* operation, hid_t minor, int error_number) {
  if (control != nullptr && control->failure == 0) control->failure = error_number;
  return report(operation, minor, error_number);
}

H5FD_t* open_file(const char* name, unsigned flags, hid_t file_access, haddr_t max_address) {
  if (name == nullptr || *name == '\0' || max_address == 0 || max_address == HADDR_UNDEF) {
    report("ketasim_file_open", H5E_CANTOPENFILE, EINVAL);
    return nullptr;
  }
  int open_flags = O_CLOEXEC | ((flags & H5F_ACC_RDWR) != 0 ? O_RDWR : O_RDONLY);
  if ((flags & H5F_ACC_TRUNC) != 0) open_flags |= O_TRUNC;
  if ((flags & H5F_ACC_CREAT) != 0) open_flags |= O_CREAT;
  if ((flags & H5F_ACC_EXCL) != 0) open_flags |= O_EXCL;
  const int descriptor = ::open(name, open_flags, 0666);
  if (descriptor < 0) {  // not kept: HDF5 first tries to open a file it creates without O_CREAT
    report("ketasim_file_open", H5E_CANTOPENFILE, errno);
    return nullptr;
  }
  struct stat status {};
  if (::fstat(descriptor, &status) != 0) {
    const int error_number = errno;
    ::close(descriptor);
    report("ketasim_file_open", H5E_CANTOPENFILE, error_number);
    return nullptr;
  }
  const auto* info = static_cast<const DriverInfo*>(H5Pget_driver_info(file_access));
  auto* file = new File{};
  file->descriptor = descriptor;
  file->end_of_file = static_cast<haddr_t>(status.st_size);
  file->device = status.st_dev;
  file->inode = status.st_ino;
  file->control = info != nullptr ? info->control : nullptr;
  return &file->hdf5;
}

herr_t close_file(H5FD_t* hdf5_file) {
  File* file = &file_of(hdf5_file);
  const int status = ::close(file->descriptor);
  const int error_number = errno;
  FileControl* control = file->control;
  delete file;
  return status == 0 ? 0 : fail(control, "ketasim_file_close", H5E_CANTCLOSEFILE, error_number);
}

int compare_files(const H5FD_t* a, const H5FD_t* b) {
  const File& first = file_of(a);
  const File& second = file_of(b);
  if (first.device != second.device) return first.device < second.device ? -1 : 1;
  if (first.inode != second.inode) return first.inode < second.inode ? -1 : 1;
  return 0;
}

// sec2's features: HDF5 may gather metadata and small raw data into larger writes.
herr_t query(const H5FD_t* /*file*/, unsigned long* flags) {
  if (flags != nullptr) {
    *flags = H5FD_FEAT_AGGREGATE_METADATA | H5FD_FEAT_ACCUMULATE_METADATA | H5FD_FEAT_DATA_SIEVE |
             H5FD_FEAT_AGGREGATE_SMALLDATA | H5FD_FEAT_DEFAULT_VFD_COMPATIBLE;
  }
  return 0;
}

haddr_t get_end_of_allocation(const H5FD_t* file, H5FD_mem_t /*type*/) {
  return file_of(file).end_of_allocation;
}

herr_t set_end_of_allocation(H5FD_t* file, H5FD_mem_t /*type*/, haddr_t address) {
  file_of(file).end_of_allocation = address;
  return 0;
}

haddr_t get_end_of_file(const H5FD_t* file, H5FD_mem_t /*type*/) {
  return file_of(file).end_of_file;
}

herr_t get_handle(H5FD_t* file, hid_t /*file_access*/, void** handle) {
  *handle = &file_of(file).descriptor;
  return 0;
}

herr_t read(H5FD_t* hdf5_file, H5FD_mem_t /*type*/, hid_t /*transfer*/, haddr_t address, std::size_t size,
            void* buffer) {
  File& file = file_of(hdf5_file);
  if (region_overflows(address, size)) return fail(file.control, "ketasim_file_read", H5E_OVERFLOW, EINVAL);
  auto* bytes = static_cast<unsigned char*>(buffer);
  while (size > 0) {
    const ssize_t count = ::pread(file.descriptor, bytes, std::min(size, kMaxTransfer), static_cast<off_t>(address));
    if (count < 0 && errno == EINTR) continue;
    if (count < 0) return fail(file.control, "ketasim_file_read", H5E_READERROR, errno);
    if (count == 0) {  // past the end of the file: zeros, as sec2 reads them
      std::memset(bytes, 0, size);
      break;
    }
    bytes += count;
    address += static_cast<haddr_t>(count);
    size -= static_cast<std::size_t>(count);
  }
  return 0;
}

herr_t write(H5FD_t* hdf5_file, H5FD_mem_t /*type*/, hid_t /*transfer*/, haddr_t address, std::size_t size,
             const void* buffer) {
  File& file = file_of(hdf5_file);
  if (region_overflows(address, size)) return fail(file.control, "ketasim_file_write", H5E_OVERFLOW, EINVAL);
  const haddr_t end = address + size;
  if (file.control == nullptr || !file.control->discarding()) {
    const auto* bytes = static_cast<const unsigned char*>(buffer);
    while (size > 0) {
      const ssize_t count = ::pwrite(file.descriptor, bytes, std::min(size, kMaxTransfer), static_cast<off_t>(address));
      if (count < 0 && errno == EINTR) continue;
      if (count < 0) return fail(file.control, "ketasim_file_write", H5E_WRITEERROR, errno);
      bytes += count;
      address += static_cast<haddr_t>(count);
      size -= static_cast<std::size_t>(count);
    }
  }
  file.end_of_file = std::max(file.end_of_file, end);
  return 0;
}

// At a flush or close, HDF5 makes the file exactly as long as its allocation.
herr_t truncate(H5FD_t* hdf5_file, hid_t /*transfer*/, hbool_t /*closing*/) {
  File& file = file_of(hdf5_file);
  if (file.end_of_allocation == file.end_of_file) return 0;
  if ((file.control == nullptr || !file.control->discarding()) &&
      ::ftruncate(file.descriptor, static_cast<off_t>(file.end_of_allocation)) != 0) {
    return fail(file.control, "ketasim_file_truncate", H5E_SEEKERROR, errno);
  }
  file.end_of_file = file.end_of_allocation;
  return 0;
}

H5FD_class_t driver_class() {
  H5FD_class_t driver{};
  driver.name = "ketasim_sec2";
  driver.maxaddr = kMaxAddress;
  driver.fc_degree = H5F_CLOSE_WEAK;
  driver.fapl_size = sizeof(DriverInfo);
  driver.open = open_file;
  driver.close = close_file;
  driver.cmp = compare_files;
  driver.query = query;
  driver.get_eoa = get_end_of_allocation;
  driver.set_eoa = set_end_of_allocation;
  driver.get_eof = get_end_of_file;
  driver.get_handle = get_handle;
  driver.read = read;
  driver.write = write;
  driver.truncate = truncate;
  const H5FD_mem_t memory_types[] = H5FD_FLMAP_DICHOTOMY;  // sec2's: metadata and raw data apart
  std::copy(std::begin(memory_types), std::end(memory_types), std::begin(driver.fl_map));
  return driver;
}

// Registered once per library session (the ID lapses if the library is closed and reopened).
hid_t driver_id() {
  static const H5FD_class_t driver = driver_class();
  static hid_t id = H5I_INVALID_HID;
  if (id < 0 || H5Iis_valid(id) <= 0) id = H5FDregister(&driver);
  return id;
}

}  // namespace

void use(hid_t file_access, FileControl* control) {
  const DriverInfo info{control};
  const hid_t id = driver_id();
  if (id < 0 || H5Pset_driver(file_access, id, &info) < 0) throw IoError("cannot set up ketasim's HDF5 file driver");
}

}  // namespace ketasim::hdf5_file_driver
