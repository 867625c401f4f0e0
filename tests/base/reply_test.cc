#include "base/reply.h"

#include "gtest/gtest.h"

namespace peregrine {
namespace {

TEST(Reply, ParsesItsOwnLine) {
  for (const Reply& r :
       {Reply{451, "4.7.1", "greylisted, try later"}, Reply{250, "", "ok"},
        Reply{550, "5.1.1", ""}, Reply{421, "", ""}}) {
    EXPECT_EQ(Reply::Parse(r.ToString()), r) << r.ToString();
  }
}

TEST(Reply, KeepsPartsApart) {
  Reply r = Reply::Parse("554 5.7.1 <a@b>: Relay access denied");
  EXPECT_EQ(r.code, 554);
  EXPECT_EQ(r.enhanced, "5.7.1");
  EXPECT_EQ(r.text, "<a@b>: Relay access denied");
  EXPECT_FALSE(r.transient());
}

TEST(Reply, TextWithoutCodeIsAllText) {
  for (const char* line : {"expired", "25", "2500 x", "abc 4.4.1 x", ""}) {
    Reply r = Reply::Parse(line);
    EXPECT_EQ(r.code, 0) << line;
    EXPECT_EQ(r.text, line);
  }
}

TEST(Reply, EnhancedStatusMustBeWellFormed) {
  EXPECT_TRUE(IsEnhancedStatus("2.0.0"));
  EXPECT_TRUE(IsEnhancedStatus("5.1.10"));
  EXPECT_FALSE(IsEnhancedStatus("3.0.0"));
  EXPECT_FALSE(IsEnhancedStatus("4.4"));
  EXPECT_FALSE(IsEnhancedStatus("4.x.1"));
  EXPECT_FALSE(IsEnhancedStatus("4.1234.1"));
  Reply r = Reply::Parse("451 4.x.1 odd");
  EXPECT_EQ(r.enhanced, "");
  EXPECT_EQ(r.text, "4.x.1 odd");
}

}  // namespace
}  // namespace peregrine
