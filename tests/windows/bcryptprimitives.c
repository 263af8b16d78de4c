/* Test-only stand-in for bcryptprimitives.dll, which Wine 8 lacks: Rust's
 * std (1.78+) gets its random numbers (HashMap keys) from ProcessPrng there.
 * This forwards to RtlGenRandom (advapi32's SystemFunction036), which Wine
 * has. Built by tests/windows.rs with MinGW next to a copy of vmflow.exe in
 * target/; never shipped: real Windows (10 and later) has the DLL. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
