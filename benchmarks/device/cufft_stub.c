/* A stand-in for libcufft.so.11 (cuFFT 11, CUDA 12), so that astra-toolbox's wheel loads on a
 * machine that has no CUDA 12 cuFFT (the real nvidia-cufft-cu12 wheel is ~200 MB and cannot
 * travel to the device machine; see benchmarks/DEVICE.md).
 *
 * libastra.so.0 (astra-toolbox 2.5.0) NEEDs libcufft.so.11 and calls exactly these five
 * functions, versioned @libcufft.so.11 (nm -D --undefined-only libastra.so.0 | grep cufft).
 * Each one here fails with CUFFT_NOT_SUPPORTED, so astra's FFT-based CUDA algorithms
 * (FBP_CUDA, FDK_CUDA: the ramp filter) report an error instead of running. Its projectors
 * (forward and back projection, 2D "cuda" and 3D "cuda3d"), which are all this project uses
 * (its FBP filters with torch.fft), do not touch cuFFT and work.
 *
 * Built by benchmarks/device_pack.sh:
 *   gcc -shared -fPIC -O2 -Wl,-soname,libcufft.so.11 -Wl,--version-script=cufft_stub.map \
 *       -o libcufft.so.11 cufft_stub.c
 * with the version script giving the five symbols the version node "libcufft.so.11".
 */

#include <stdio.h>

typedef int cufftHandle;
typedef int cufftType;
typedef int cufftResult;
typedef float cufftReal;
typedef struct { float x, y; } cufftComplex;
typedef void *cudaStream_t;

enum { CUFFT_INVALID_PLAN = 1, CUFFT_NOT_SUPPORTED = 16 };

static void explain(void)
{
    static int said = 0;
    if (!said) {
        said = 1;
        fputs("libcufft.so.11 stub (benchmarks/device/cufft_stub.c): cuFFT is not available; "
              "astra's FFT-based CUDA algorithms (FBP_CUDA, FDK_CUDA) fail, its projectors work\n", stderr);
    }
}

cufftResult cufftPlan1d(cufftHandle *plan, int nx, cufftType type, int batch)
{
    (void)nx; (void)type; (void)batch;
    explain();
    if (plan)
        *plan = 0;
    return CUFFT_NOT_SUPPORTED;
}

cufftResult cufftExecR2C(cufftHandle plan, cufftReal *idata, cufftComplex *odata)
{
    (void)plan; (void)idata; (void)odata;
    return CUFFT_NOT_SUPPORTED;
}

cufftResult cufftExecC2R(cufftHandle plan, cufftComplex *idata, cufftReal *odata)
{
    (void)plan; (void)idata; (void)odata;
    return CUFFT_NOT_SUPPORTED;
}

cufftResult cufftSetStream(cufftHandle plan, cudaStream_t stream)
{
    (void)plan; (void)stream;
    return CUFFT_NOT_SUPPORTED;
}

cufftResult cufftDestroy(cufftHandle plan)
{
    (void)plan;
    return CUFFT_INVALID_PLAN;
}
