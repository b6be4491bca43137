import pytest

from zscgan_tf.errors import FIRST_LINE_LIMIT, UserError, first_line


def _raised(function):
    with pytest.raises(Exception) as info:
        function()
    return info.value


def test_first_line_quotes_a_message_in_one_line_cut_to_the_limit():
    assert first_line(ValueError("bad shape\n  details")) == "bad shape"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(ValueError("x" * 1000)) == "x" * FIRST_LINE_LIMIT


def test_first_line_quotes_our_own_message_where_a_library_wrapped_it():
    def wrapped():
        try:
            raise UserError("cannot recreate Keras 3 layer 'ChannelGain'; pass --teacher_custom_objects=<...>")
        except UserError as error:
            raise TypeError("Error when deserializing class 'Keras3Layer' using config={...}") from error

    assert first_line(_raised(wrapped)).startswith("cannot recreate Keras 3 layer 'ChannelGain'")

    def rephrased():  # Our own message that says more than the one it replaced.
        try:
            raise UserError("the file is missing")
        except UserError:
            raise UserError("evaluation data: the file is missing (pass --eval_dataset)")

    assert first_line(_raised(rephrased)) == "evaluation data: the file is missing (pass --eval_dataset)"

    def filtered():  # TensorFlow's traceback filtering re-raises every error `from None`.
        try:
            wrapped()
        except TypeError as error:
            raise error.with_traceback(None) from None

    assert first_line(_raised(filtered)).startswith("cannot recreate Keras 3 layer 'ChannelGain'")
    assert first_line(_raised(lambda: int("x"))) == "invalid literal for int() with base 10: 'x'"  # No UserError.


def test_first_line_leaves_out_what_tensorflow_wraps_an_op_s_message_in():
    import tensorflow as tf
    photograph = tf.io.encode_jpeg(tf.fill((64, 64, 3), tf.constant(128, tf.uint8))).numpy()
    error = _raised(lambda: tf.io.decode_jpeg(photograph[:len(photograph) // 3]))
    assert "{{function_node" in str(error) and "[Op:DecodeJpeg]" in str(error)  # As a truncated photograph gave.
    assert first_line(error) == "jpeg::Uncompress failed. Invalid JPEG data or crop window."
    assert first_line(ValueError("{{function_node f}} x [Op:Cast] name: y")) == "x"
