"""Names a tpp-aot kernel may not take: a library's kernel is an external C function,
so one named like a C library function replaces it in every program linked against
the library (a kernel named `malloc` also receives the generated BRGEMM's own scratch
allocation), one named like a keyword breaks the header, and one named like the
runtime's symbols clashes with libtpp. `problem(name)` says why a name is refused.

The lists: C23 and C++ keywords; the C standard library's functions and objects
(C23, math in its float/long double forms), POSIX's and common glibc extensions; the
names ISO C reserves (a leading underscore: `_start`, `__libc_*`, `_Exit`); the Python C
API's (libtpp embeds Python); anything the host's C and math libraries export beyond these.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Py_Initialize, PyObject_Call, PyInit__tpp_capi (libtpp's own export): not PyTorchGemm
_PYTHON_API = re.compile(r"Py([A-Z][A-Za-z]*)?_")

KEYWORDS = frozenset("""
auto break case char const continue default do double else enum extern float for goto if
inline int long register restrict return short signed sizeof static struct switch typedef
union unsigned void volatile while alignas alignof bool constexpr false nullptr static_assert
thread_local true typeof typeof_unqual asm
and and_eq bitand bitor catch char8_t char16_t char32_t class co_await co_return co_yield
compl concept consteval constinit const_cast decltype delete dynamic_cast explicit export
friend mutable namespace new noexcept not not_eq operator or or_eq private protected public
reinterpret_cast requires static_cast template this throw try typeid typename using virtual
wchar_t xor xor_eq final override
""".split())

# math.h functions, each also with an f and an l suffix
_MATH = """
acos asin atan atan2 cos sin tan acosh asinh atanh cosh sinh tanh exp exp2 expm1 exp10 frexp
ilogb ldexp log log10 log1p log2 logb modf scalbn scalbln cbrt fabs hypot pow sqrt erf erfc
lgamma tgamma ceil floor nearbyint rint lrint llrint round lround llround trunc fmod remainder
remquo copysign nan nextafter nexttoward fdim fmax fmin fma acospi asinpi atanpi atan2pi cospi
sinpi tanpi exp10m1 exp2m1 log10p1 log2p1 logp1 compoundn pown powr rootn rsqrt fromfp ufromfp
fromfpx ufromfpx fmaximum fminimum fmaximum_num fminimum_num fmaximum_mag fminimum_mag
nextup nextdown canonicalize roundeven totalorder totalordermag getpayload setpayload
setpayloadsig sincos gamma j0 j1 jn y0 y1 yn significand drem scalb lgamma_r finite isinf isnan
""".split()
# complex.h functions (c + name, each with f and l suffixes)
_COMPLEX = ("abs acos acosh arg asin asinh atan atanh cos cosh exp imag log pow proj real sin sinh "
            "sqrt tan tanh")

LIBC = frozenset("""
main abort atexit at_quick_exit exit quick_exit getenv system malloc calloc realloc free
aligned_alloc free_sized free_aligned_sized memalign posix_memalign valloc pvalloc reallocarray
malloc_usable_size mallopt mallinfo mallinfo2 malloc_trim sbrk brk mmap munmap mprotect msync
madvise mlock munlock mlockall munlockall mremap atof atoi atol atoll strtod strtof strtold strtol
strtoll strtoul strtoull strfromd strfromf strfroml rand srand rand_r random srandom drand48
erand48 lrand48 nrand48 mrand48 jrand48 srand48 seed48 lcong48 bsearch qsort qsort_r abs labs
llabs div ldiv lldiv imaxabs imaxdiv strtoimax strtoumax mblen mbtowc wctomb mbstowcs wcstombs
memalignment memcpy memccpy memmove memset memset_explicit memcmp memchr memrchr memmem mempcpy
rawmemchr bzero bcopy bcmp explicit_bzero strcpy strncpy strcat strncat strcmp strncmp strcoll
strxfrm strchr strrchr strcspn strspn strpbrk strstr strtok strtok_r strlen strnlen strerror
strerror_r strdup strndup stpcpy stpncpy strcasecmp strncasecmp strsignal strsep strlcpy strlcat
strcasestr strchrnul strverscmp index rindex ffs ffsl ffsll fopen freopen fclose fflush setbuf
setvbuf fprintf fscanf printf scanf snprintf sprintf sscanf vfprintf vfscanf vprintf vscanf
vsnprintf vsprintf vsscanf asprintf vasprintf dprintf vdprintf fgetc fgets fputc fputs getc
getchar gets putc putchar puts ungetc fread fwrite fgetpos fseek fsetpos ftell rewind clearerr
feof ferror perror remove rename tmpfile tmpnam tempnam fdopen fileno popen pclose getline
getdelim fseeko ftello flockfile funlockfile ftrylockfile getc_unlocked putc_unlocked
getchar_unlocked putchar_unlocked fmemopen open_memstream stdin stdout stderr errno environ
isalnum isalpha isblank iscntrl isdigit isgraph islower isprint ispunct isspace isupper isxdigit
isascii toascii tolower toupper iswalnum iswalpha iswblank iswcntrl iswdigit iswgraph iswlower
iswprint iswpunct iswspace iswupper iswxdigit iswctype wctype towlower towupper towctrans wctrans
setlocale localeconv newlocale freelocale duplocale uselocale clock difftime mktime time
timespec_get timespec_getres asctime ctime gmtime localtime strftime strptime gmtime_r
localtime_r asctime_r ctime_r tzset timegm nanosleep clock_gettime clock_settime clock_getres
clock_nanosleep gettimeofday settimeofday sleep usleep alarm signal raise kill sigaction
sigprocmask sigemptyset sigfillset sigaddset sigdelset sigismember sigsuspend sigwait
sigaltstack sigsetjmp siglongjmp setjmp longjmp pause psignal killpg thrd_create thrd_equal
thrd_current thrd_sleep thrd_yield thrd_exit thrd_detach thrd_join mtx_init mtx_lock
mtx_timedlock mtx_trylock mtx_unlock mtx_destroy call_once cnd_init cnd_signal cnd_broadcast
cnd_wait cnd_timedwait cnd_destroy tss_create tss_delete tss_get tss_set feclearexcept
fegetexceptflag feraiseexcept fesetexceptflag fetestexcept fegetround fesetround fegetenv
feholdexcept fesetenv feupdateenv btowc wctob mbsinit mbrlen mbrtowc wcrtomb mbsrtowcs wcsrtombs
mbrtoc8 c8rtomb mbrtoc16 c16rtomb mbrtoc32 c32rtomb fwprintf fwscanf swprintf swscanf vfwprintf
vfwscanf vswprintf vswscanf vwprintf vwscanf wprintf wscanf fgetwc fgetws fputwc fputws fwide
getwc getwchar putwc putwchar ungetwc wcstod wcstof wcstold wcstol wcstoll wcstoul wcstoull
wcscpy wcsncpy wcscat wcsncat wcscmp wcscoll wcsncmp wcsxfrm wcschr wcscspn wcspbrk wcsrchr
wcsspn wcsstr wcstok wcslen wcsdup wmemchr wmemcmp wmemcpy wmemmove wmemset wcsftime
open openat creat close read write pread pwrite readv writev lseek dup dup2 dup3 pipe pipe2 fcntl
ioctl fsync fdatasync sync truncate ftruncate access faccessat chdir fchdir getcwd mkdir rmdir
unlink unlinkat link symlink readlink chmod fchmod chown fchown lchown stat fstat lstat fstatat
umask mkfifo mknod fork vfork execl execle execlp execv execve execvp execvpe fexecve wait
waitpid waitid _exit getpid getppid getuid geteuid getgid getegid setuid setgid seteuid setegid
setsid getsid setpgid getpgid getpgrp getgroups setgroups isatty ttyname sysconf pathconf
fpathconf confstr getopt getopt_long optarg optind opterr optopt gethostname sethostname
getlogin getpagesize chroot nice opendir fdopendir readdir readdir_r closedir rewinddir
seekdir telldir scandir alphasort dirfd mkstemp mkdtemp mktemp realpath dirname basename
glob globfree fnmatch wordexp regcomp regexec regerror regfree select pselect poll ppoll
epoll_create epoll_ctl epoll_wait socket bind listen accept connect send recv sendto recvfrom
sendmsg recvmsg shutdown getsockopt setsockopt getsockname getpeername socketpair getaddrinfo
freeaddrinfo gai_strerror gethostbyname inet_ntop inet_pton htonl htons ntohl ntohs
pthread_create pthread_join pthread_detach pthread_exit pthread_self pthread_equal
pthread_cancel pthread_once pthread_kill pthread_sigmask pthread_attr_init
pthread_attr_destroy pthread_mutex_init pthread_mutex_destroy pthread_mutex_lock
pthread_mutex_trylock pthread_mutex_unlock pthread_cond_init pthread_cond_destroy
pthread_cond_wait pthread_cond_timedwait pthread_cond_signal pthread_cond_broadcast
pthread_key_create pthread_key_delete pthread_getspecific pthread_setspecific
pthread_rwlock_init pthread_rwlock_rdlock pthread_rwlock_wrlock pthread_rwlock_unlock
pthread_spin_lock pthread_spin_unlock pthread_barrier_init pthread_barrier_wait pthread_atfork
sem_init sem_destroy sem_wait sem_post sem_open sem_close shm_open shm_unlink dlopen dlsym
dlclose dlerror dladdr dl_iterate_phdr sched_yield sched_getaffinity sched_setaffinity
getrlimit setrlimit getrusage uname syscall prctl backtrace backtrace_symbols
getauxval getentropy getrandom crypt qecvt ecvt fcvt gcvt assert setenv unsetenv putenv
clearenv secure_getenv mkostemp atexit on_exit err errx warn warnx error iconv iconv_open
iconv_close nl_langinfo catopen catgets catclose syslog openlog closelog end etext edata
""".split()) | frozenset(f + s for f in _MATH for s in ("", "f", "l")) | frozenset(
    "c" + f + s for f in _COMPLEX.split() for s in ("", "f", "l"))


@functools.lru_cache(maxsize=1)
def _host_libraries() -> tuple:
    """The host's C and math libraries (their exports are refused too), where found."""
    found = []
    for name in ("c", "m"):
        path = ctypes.util.find_library(name)
        try:
            found.append(ctypes.CDLL(path) if path else None)
        except OSError:
            pass
    return tuple(lib for lib in found if lib is not None)


def _exported_by_host(name: str) -> bool:
    for lib in _host_libraries():
        try:
            getattr(lib, name)
            return True
        except AttributeError:
            pass
    return False


def problem(name: object) -> str | None:
    """Why `name` cannot be a kernel's C symbol (None: it can)."""
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        return "is not a C identifier (letters, digits and _, not starting with a digit)"
    if name in KEYWORDS:
        return "is a C or C++ keyword"
    if name.startswith("_"):
        return ("starts with '_': ISO C reserves such names for the implementation (_start, "
                "__libc_*, _Exit, ...)")
    if name.lower().startswith("tpp_"):
        return "starts with 'tpp_', the prefix of the tpp runtime's own symbols (libtpp, tpp.h)"
    if _PYTHON_API.match(name):
        return ("is in the Python C API's namespace (Py_*, PyObject_*, PyInit_*), which libtpp's "
                "embedded interpreter links")
    if name in LIBC or _exported_by_host(name):
        return ("is a function or object of the C library: a kernel under that name would "
                "replace it in every program linked against the library")
    return None
