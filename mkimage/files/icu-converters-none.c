/* libicuuc.so.72 for the Capsule image: an ICU without converters (mkimage/build.sh builds it).
 *
 * Debian's libarchive links libxml2 (for the xar format) and libxml2 links ICU for the character
 * sets it does not convert itself, which would put 32 MiB of ICU (libicuuc + libicudata) in the
 * root filesystem. capsuled enables libarchive's tar format only (images/archive.c), so libxml2
 * never runs; these are the seven ICU functions libxml2 imports, behaving as an ICU with no
 * converter data: ucnv_open finds no converter (U_FILE_ACCESS_ERROR), so libxml2 would report the
 * encoding as unsupported, and nothing else can be reached without a converter. */
#include <stddef.h>

typedef int UErrorCode;
typedef struct UConverter UConverter;
typedef void (*UConverterCallback)(void);

#define U_ILLEGAL_ARGUMENT_ERROR 1
#define U_FILE_ACCESS_ERROR 4

static void fail(UErrorCode *err, UErrorCode code)
{
        if (err && *err <= 0)
                *err = code;
}

UConverter *ucnv_open_72(const char *name, UErrorCode *err)
{
        (void)name;
        fail(err, U_FILE_ACCESS_ERROR);
        return NULL;
}

void ucnv_close_72(UConverter *cnv)
{
        (void)cnv;
}

void ucnv_convertEx_72(UConverter *to, UConverter *from, char **target, const char *target_limit,
                       const char **source, const char *source_limit, void *pivot_start,
                       void **pivot_source, void **pivot_target, const void *pivot_limit,
                       int reset, int flush, UErrorCode *err)
{
        (void)to, (void)from, (void)target, (void)target_limit, (void)source, (void)source_limit;
        (void)pivot_start, (void)pivot_source, (void)pivot_target, (void)pivot_limit;
        (void)reset, (void)flush;
        fail(err, U_ILLEGAL_ARGUMENT_ERROR);
}

void ucnv_setFromUCallBack_72(UConverter *cnv, UConverterCallback action, const void *context,
                              UConverterCallback *old_action, const void **old_context,
                              UErrorCode *err)
{
        (void)cnv, (void)action, (void)context, (void)old_action, (void)old_context;
        fail(err, U_ILLEGAL_ARGUMENT_ERROR);
}

void ucnv_setToUCallBack_72(UConverter *cnv, UConverterCallback action, const void *context,
                            UConverterCallback *old_action, const void **old_context,
                            UErrorCode *err)
{
        (void)cnv, (void)action, (void)context, (void)old_action, (void)old_context;
        fail(err, U_ILLEGAL_ARGUMENT_ERROR);
}

void UCNV_FROM_U_CALLBACK_STOP_72(void)
{
}

void UCNV_TO_U_CALLBACK_STOP_72(void)
{
}
