"""oci_image: Peregrine's container image, built by tools/oci_image.sh.

Outputs NAME.layout (an OCI image layout directory) and NAME.tar (the same
as an oci-archive, for `podman load`). Runs outside the sandbox: umoci
writes file owners into the layer, which needs root."""

def _oci_image_impl(ctx):
    layout = ctx.actions.declare_directory(ctx.label.name + ".layout")
    archive = ctx.actions.declare_file(ctx.label.name + ".tar")
    ctx.actions.run(
        executable = ctx.file._script,
        arguments = [
            ctx.file.binary.path,
            ctx.files.files[0].dirname,
            layout.path,
            archive.path,
        ],
        inputs = [ctx.file.binary] + ctx.files.files,
        outputs = [layout, archive],
        mnemonic = "OciImage",
        progress_message = "Building the OCI image %s" % ctx.label,
        execution_requirements = {"no-sandbox": "1", "no-remote": "1"},
        use_default_shell_env = True,
    )
    return [DefaultInfo(
        files = depset([layout, archive]),
        runfiles = ctx.runfiles(files = [layout, archive]),
    )]

oci_image = rule(
    implementation = _oci_image_impl,
    attrs = {
        "binary": attr.label(allow_single_file = True, mandatory = True),
        # peregrine.toml, passwd, group, nsswitch.conf: one folder.
        "files": attr.label_list(allow_files = True, mandatory = True),
        "_script": attr.label(
            default = "//tools:oci_image.sh",
            allow_single_file = True,
        ),
    },
)
