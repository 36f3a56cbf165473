"""`tf.train.Example` message classes without importing TensorFlow.

Beam workers unpickle every module their DoFns name, and importing TensorFlow there costs
each worker process seconds and hundreds of MB (BUILD_NOTES.md, Decisions). The
messages are declared here with the field numbers of tensorflow/core/example/*.proto
(the subset we write: bytes, float and int64 features) in a private descriptor pool, so the
protobuf runtime serializes them exactly as TensorFlow's own classes do (tested).
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _message(name, *fields, options=None):
    message = descriptor_pb2.DescriptorProto(name=name, options=options)
    for field_name, number, field_type, type_name, label in fields:
        message.field.add(
            name=field_name, number=number, type=field_type, type_name=type_name, label=label, json_name=field_name
        )
    return message


def _build_pool() -> descriptor_pool.DescriptorPool:
    proto = descriptor_pb2.FileDescriptorProto(name="data_prep/example.proto", package="tensorflow", syntax="proto3")
    repeated, optional = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL
    packed = descriptor_pb2.FieldOptions(packed=True)
    proto.message_type.add().CopyFrom(_message("BytesList", ("value", 1, _F.TYPE_BYTES, None, repeated)))
    float_list = _message("FloatList", ("value", 1, _F.TYPE_FLOAT, None, repeated))
    float_list.field[0].options.CopyFrom(packed)
    proto.message_type.add().CopyFrom(float_list)
    int64_list = _message("Int64List", ("value", 1, _F.TYPE_INT64, None, repeated))
    int64_list.field[0].options.CopyFrom(packed)
    proto.message_type.add().CopyFrom(int64_list)
    feature = _message(
        "Feature",
        ("bytes_list", 1, _F.TYPE_MESSAGE, ".tensorflow.BytesList", optional),
        ("float_list", 2, _F.TYPE_MESSAGE, ".tensorflow.FloatList", optional),
        ("int64_list", 3, _F.TYPE_MESSAGE, ".tensorflow.Int64List", optional),
    )
    feature.oneof_decl.add(name="kind")
    for field in feature.field:
        field.oneof_index = 0
    proto.message_type.add().CopyFrom(feature)
    features = _message("Features", ("feature", 1, _F.TYPE_MESSAGE, ".tensorflow.Features.FeatureEntry", repeated))
    features.nested_type.add().CopyFrom(
        _message(
            "FeatureEntry",
            ("key", 1, _F.TYPE_STRING, None, optional),
            ("value", 2, _F.TYPE_MESSAGE, ".tensorflow.Feature", optional),
            options=descriptor_pb2.MessageOptions(map_entry=True),
        )
    )
    proto.message_type.add().CopyFrom(features)
    proto.message_type.add().CopyFrom(
        _message("Example", ("features", 1, _F.TYPE_MESSAGE, ".tensorflow.Features", optional))
    )
    pool = descriptor_pool.DescriptorPool()  # Private: TensorFlow's own tensorflow.Example may be loaded too.
    pool.Add(proto)
    return pool


_POOL = _build_pool()
Example = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("tensorflow.Example"))
Feature = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("tensorflow.Feature"))
