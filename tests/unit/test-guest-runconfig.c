/* The CAPSULE1 run config framing (src/capsule-guest/runconfig.c): round trip through memory and
 * a file, and clear errors for truncated input, bad magic, oversized lengths and bad fields. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runconfig.h"
#include "test.h"

static char *argv_[] = {"/bin/sh", "-c", "echo hi"};
static char *env_[] = {"PATH=/bin", "A=b=c"};
static uint32_t gids_[] = {10, 20};

static void sample(RunConfig *rc, Capsule__Guest__V1__VolumeMount *v,
                   Capsule__Guest__V1__VolumeMount **vp)
{
        capsule__guest__v1__run_config__init(rc);
        capsule__guest__v1__volume_mount__init(v);
        v->device = "/dev/vdc";
        v->path = "/data";
        v->read_only = 1;
        vp[0] = v;
        rc->argv = argv_;
        rc->n_argv = 3;
        rc->env = env_;
        rc->n_env = 2;
        rc->working_dir = "/srv";
        rc->uid = 1000;
        rc->gid = 1000;
        rc->additional_gids = gids_;
        rc->n_additional_gids = 2;
        rc->hostname = "web";
        rc->volumes = vp;
        rc->n_volumes = 1;
        rc->stop_grace_seconds = 7;
}

static void check_sample(const RunConfig *d)
{
        CHECK(d->n_argv == 3);
        CHECK_STR_EQ(d->argv[2], "echo hi");
        CHECK(d->n_env == 2);
        CHECK_STR_EQ(d->env[1], "A=b=c");
        CHECK_STR_EQ(d->working_dir, "/srv");
        CHECK(d->uid == 1000 && d->gid == 1000);
        CHECK(d->n_additional_gids == 2 && d->additional_gids[1] == 20);
        CHECK_STR_EQ(d->hostname, "web");
        CHECK(d->n_volumes == 1);
        CHECK_STR_EQ(d->volumes[0]->path, "/data");
        CHECK(d->volumes[0]->read_only);
        CHECK(d->stop_grace_seconds == 7);
}

TEST(round_trip)
{
        RunConfig rc;
        Capsule__Guest__V1__VolumeMount v, *vp[1];
        sample(&rc, &v, vp);
        struct cap_error err = {0};
        uint8_t *buf = NULL;
        size_t len = 0;
        CHECK(runconfig_encode(&rc, &buf, &len, &err) == 0);
        CHECK(len % 512 == 0);
        CHECK(memcmp(buf, "CAPSULE1", 8) == 0);
        RunConfig *d = NULL;
        CHECK(runconfig_decode(buf, len, "mem", &d, &err) == 0);
        if (d)
                check_sample(d);
        runconfig_free(d);
        /* without the padding too */
        size_t n = buf[8] | (size_t)buf[9] << 8;
        d = NULL;
        CHECK(runconfig_decode(buf, 12 + n, "mem", &d, &err) == 0);
        runconfig_free(d);
        free(buf);
}

TEST(file_round_trip)
{
        char path[] = "/tmp/test-guest-runconfig-XXXXXX";
        int fd = mkstemp(path);
        CHECK(fd >= 0);
        close(fd);
        RunConfig rc;
        Capsule__Guest__V1__VolumeMount v, *vp[1];
        sample(&rc, &v, vp);
        struct cap_error err = {0};
        CHECK(runconfig_write_file(path, &rc, &err) == 0);
        RunConfig *d = NULL;
        CHECK(runconfig_read_file(path, &d, &err) == 0);
        if (d)
                check_sample(d);
        runconfig_free(d);
        unlink(path);
        CHECK(runconfig_read_file(path, &d, &err) < 0);
        CHECK_CONTAINS(err.msg, path);
        CHECK_CONTAINS(err.msg, "No such file");
}

TEST(framing_errors)
{
        RunConfig rc;
        Capsule__Guest__V1__VolumeMount v, *vp[1];
        sample(&rc, &v, vp);
        struct cap_error err = {0};
        uint8_t *buf = NULL;
        size_t len = 0;
        CHECK(runconfig_encode(&rc, &buf, &len, &err) == 0);
        RunConfig *d = NULL;

        CHECK(runconfig_decode(buf, 5, "/dev/vda", &d, &err) < 0);
        CHECK_CONTAINS(err.msg, "/dev/vda: truncated run config");
        size_t n = buf[8] | (size_t)buf[9] << 8;
        CHECK(runconfig_decode(buf, 12 + n - 1, "/dev/vda", &d, &err) < 0);
        CHECK_CONTAINS(err.msg, "header says");

        buf[0] = 'X';
        CHECK(runconfig_decode(buf, len, "/dev/vda", &d, &err) < 0);
        CHECK_CONTAINS(err.msg, "/dev/vda: bad magic");
        CHECK(err.status == CAP_INVALID_ARGUMENT);
        buf[0] = 'C';

        buf[11] = 0x7f; /* ~2 GiB */
        CHECK(runconfig_decode(buf, len, "/dev/vda", &d, &err) < 0);
        CHECK_CONTAINS(err.msg, "exceeds the maximum");
        buf[11] = 0;

        buf[12] = 0xff; /* corrupt the protobuf */
        buf[13] = 0xff;
        CHECK(runconfig_decode(buf, len, "/dev/vda", &d, &err) < 0);
        CHECK_CONTAINS(err.msg, "malformed protobuf");
        CHECK(d == NULL);
        free(buf);
}

TEST(validation)
{
        RunConfig rc;
        Capsule__Guest__V1__VolumeMount v, *vp[1];
        struct cap_error err = {0};
        uint8_t *buf = NULL;
        size_t len;

        sample(&rc, &v, vp);
        rc.n_argv = 0;
        CHECK(runconfig_encode(&rc, &buf, &len, &err) < 0);
        CHECK_CONTAINS(err.msg, "argv");

        sample(&rc, &v, vp);
        char *bad_env[] = {"NOEQUALS"};
        rc.env = bad_env;
        rc.n_env = 1;
        CHECK(runconfig_validate(&rc, &err) < 0);
        CHECK_CONTAINS(err.msg, "env[0] \"NOEQUALS\"");

        sample(&rc, &v, vp);
        v.path = "/data/../../etc";
        CHECK(runconfig_validate(&rc, &err) < 0);
        CHECK_CONTAINS(err.msg, "volumes[0].path");
        v.path = "/";
        CHECK(runconfig_validate(&rc, &err) < 0);
        v.path = "/data..x";
        CHECK(runconfig_validate(&rc, &err) == 0);
        v.device = "";
        CHECK(runconfig_validate(&rc, &err) < 0);
        CHECK_CONTAINS(err.msg, "volumes[0].device");

        sample(&rc, &v, vp);
        rc.working_dir = "relative";
        CHECK(runconfig_validate(&rc, &err) < 0);
        CHECK_CONTAINS(err.msg, "working_dir");
        CHECK(buf == NULL);
}

int main(void)
{
        RUN(round_trip);
        RUN(file_round_trip);
        RUN(framing_errors);
        RUN(validation);
        return test_summary();
}
